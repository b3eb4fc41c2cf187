//! The darknet layers beyond convolution and pooling: `[local]` and `[connected]` (YOLOv1) and
//! `[reorg]` (YOLOv2's passthrough), each index for index as darknet computes it.

use candle_core::{Device, Tensor};

use super::net::{Activation, BatchNorm};
use super::weights::{Param, WeightReader};

/// `(channels, height, width)`.
type Chw = (usize, usize, usize);

/// `[local]` (darknet `local_layer.c`): like a convolution, but every output position has its own
/// kernels. darknet pads by `pad` (0 or 1, not `size/2`) and sizes the output `(h − 1)/stride + 1`
/// when padded, `(h − size)/stride + 1` otherwise. Runs on the CPU (the tensor is copied there).
#[derive(Debug)]
pub struct Local {
    /// `(locations, filters, c·size²)` row-major.
    weight: Vec<f32>,
    /// `(filters, locations)`: one bias per output value.
    bias: Vec<f32>,
    input: Chw,
    filters: usize,
    size: usize,
    stride: usize,
    pad: usize,
    out_h: usize,
    out_w: usize,
    activation: Activation,
}

/// What a `[local]` section says.
#[derive(Debug, Clone)]
pub struct LocalSpec {
    pub filters: usize,
    pub size: usize,
    pub stride: usize,
    /// darknet's `pad` flag (pads by 1 whatever the size).
    pub pad: bool,
    pub activation: Activation,
    /// Scale of synthesized kernels.
    pub gain: f32,
}

impl Local {
    /// Read the parameters (darknet order: biases for every output value, then kernels).
    pub fn load(w: &mut WeightReader, input: Chw, spec: &LocalSpec) -> Result<Self, String> {
        let (c, h, wd) = input;
        let LocalSpec {
            filters,
            size,
            stride,
            activation,
            gain,
            ..
        } = *spec;
        if filters == 0 || size == 0 || stride == 0 {
            return Err("filters, size and stride must be positive".into());
        }
        let pad = usize::from(spec.pad);
        let span = |n: usize| {
            if pad == 1 {
                n.checked_sub(1)
            } else {
                n.checked_sub(size)
            }
        };
        let (Some(sh), Some(sw)) = (span(h), span(wd)) else {
            return Err(format!("kernel {size} is larger than its {wd}x{h} input"));
        };
        let (out_h, out_w) = (sh / stride + 1, sw / stride + 1);
        let locations = out_h * out_w;
        let k = c * size * size;
        let bias = w.take(filters * locations, Param::Bias)?;
        let weight = w.take(locations * filters * k, Param::Kernel { fan_in: k, gain })?;
        Ok(Self {
            weight,
            bias,
            input,
            filters,
            size,
            stride,
            pad,
            out_h,
            out_w,
            activation,
        })
    }

    /// Output shape.
    pub fn out_shape(&self) -> Chw {
        (self.filters, self.out_h, self.out_w)
    }

    /// `(batch, c, h, w)` → `(batch, filters, out_h, out_w)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (c, h, w) = self.input;
        let batch = x.dim(0)?;
        let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let (size, locations) = (self.size, self.out_h * self.out_w);
        let k = c * size * size;
        let mut out = vec![0f32; batch * self.filters * locations];
        let mut col = vec![0f32; k];
        for b in 0..batch {
            let img = &data[b * c * h * w..(b + 1) * c * h * w];
            let dst = &mut out[b * self.filters * locations..(b + 1) * self.filters * locations];
            for loc in 0..locations {
                let (oy, ox) = (loc / self.out_w, loc % self.out_w);
                // darknet's im2col order: channel, kernel row, kernel column; zero outside
                for (i, v) in col.iter_mut().enumerate() {
                    let (ch, ky, kx) = (i / (size * size), i / size % size, i % size);
                    let iy = (oy * self.stride + ky)
                        .checked_sub(self.pad)
                        .filter(|&y| y < h);
                    let ix = (ox * self.stride + kx)
                        .checked_sub(self.pad)
                        .filter(|&x| x < w);
                    *v = match (iy, ix) {
                        (Some(y), Some(x)) => img[(ch * h + y) * w + x],
                        _ => 0.0,
                    };
                }
                for f in 0..self.filters {
                    let row = &self.weight
                        [(loc * self.filters + f) * k..(loc * self.filters + f + 1) * k];
                    let dot: f32 = row.iter().zip(&col).map(|(a, b)| a * b).sum();
                    dst[f * locations + loc] = self.bias[f * locations + loc] + dot;
                }
            }
        }
        let y = Tensor::from_vec(
            out,
            (batch, self.filters, self.out_h, self.out_w),
            x.device(),
        )?;
        self.activation.apply(&y)
    }
}

/// `[connected]` (darknet `connected_layer.c`): `y = act(W·x + b)` over the input flattened in
/// CHW order, batch norm folded in; output `(batch, outputs, 1, 1)`.
#[derive(Debug)]
pub struct Connected {
    /// `(inputs, outputs)`: Wᵀ, ready for `x · Wᵀ`.
    weight_t: Tensor,
    bias: Tensor,
    outputs: usize,
    activation: Activation,
}

/// What a `[connected]` section says.
#[derive(Debug, Clone)]
pub struct ConnectedSpec {
    pub outputs: usize,
    pub bn: bool,
    pub activation: Activation,
    /// Scale of synthesized kernels.
    pub gain: f32,
}

impl Connected {
    /// Read the parameters for `inputs` input values (darknet order: biases, weights
    /// `(outputs, inputs)`, then γ, mean, variance when batch-normalized).
    pub fn load(
        w: &mut WeightReader,
        device: &Device,
        inputs: usize,
        spec: &ConnectedSpec,
    ) -> Result<Self, String> {
        let ConnectedSpec {
            outputs,
            bn,
            activation,
            gain,
        } = *spec;
        if outputs == 0 {
            return Err("output must be positive".into());
        }
        let biases = w.take(outputs, Param::Bias)?;
        let mut weight = w.take(
            outputs * inputs,
            Param::Kernel {
                fan_in: inputs,
                gain,
            },
        )?;
        let bias = if bn {
            BatchNorm::take(w, outputs)?.fold(&mut weight, &biases)
        } else {
            biases
        };
        let t = |e: candle_core::Error| e.to_string();
        let weight_t = Tensor::from_vec(weight, (outputs, inputs), device)
            .and_then(|m| m.t()?.contiguous())
            .map_err(t)?;
        let bias = Tensor::from_vec(bias, (1, outputs), device).map_err(t)?;
        Ok(Self {
            weight_t,
            bias,
            outputs,
            activation,
        })
    }

    /// Its parameters in `dtype`.
    pub fn convert(&mut self, dtype: candle_core::DType) -> candle_core::Result<()> {
        self.weight_t = self.weight_t.to_dtype(dtype)?;
        self.bias = self.bias.to_dtype(dtype)?;
        Ok(())
    }

    /// `(batch, c, h, w)` → `(batch, outputs, 1, 1)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let y = x
            .flatten_from(1)?
            .matmul(&self.weight_t)?
            .broadcast_add(&self.bias)?;
        self.activation
            .apply(&y)?
            .reshape((batch, self.outputs, 1, 1))
    }
}

/// `[reorg]` (darknet `reorg_layer.c`, `reorg_cpu(…, forward = 0)`): `(c, h, w)` →
/// `(c·s², h/s, w/s)` by a fixed permutation of the flat buffer. darknet's permutation is not
/// the textbook space-to-depth (it reads the input as if it were `(c/s², h·s, w·s)`); weights
/// are trained for it, so it is reproduced exactly, as a precomputed gather.
#[derive(Debug)]
pub struct Reorg {
    /// `out[i] = in[gather[i]]` within one image.
    gather: Tensor,
    out: Chw,
}

impl Reorg {
    /// The permutation for inputs of shape `input`.
    pub fn new(input: Chw, stride: usize, device: &Device) -> Result<Self, String> {
        let (c, h, w) = input;
        let s2 = stride * stride;
        if stride == 0 || h % stride != 0 || w % stride != 0 || c % s2 != 0 {
            return Err(format!(
                "stride={stride} does not divide the {w}x{h} input, or {c} channels by {s2}"
            ));
        }
        let out_c = c / s2;
        let mut gather = vec![0u32; c * h * w];
        for k in 0..c {
            for j in 0..h {
                for i in 0..w {
                    let in_index = i + w * (j + h * k);
                    let (c2, offset) = (k % out_c, k / out_c);
                    let w2 = i * stride + offset % stride;
                    let h2 = j * stride + offset / stride;
                    let out_index = w2 + w * stride * (h2 + h * stride * c2);
                    gather[in_index] = out_index as u32;
                }
            }
        }
        let n = gather.len();
        let gather = Tensor::from_vec(gather, n, device).map_err(|e| e.to_string())?;
        Ok(Self {
            gather,
            out: (c * s2, h / stride, w / stride),
        })
    }

    /// Output shape.
    pub fn out_shape(&self) -> Chw {
        self.out
    }

    /// `(batch, c, h, w)` → `(batch, c·s², h/s, w/s)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let (c, h, w) = self.out;
        x.flatten_from(1)?
            .contiguous()?
            .index_select(&self.gather, 1)?
            .reshape((batch, c, h, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[local]` layer whose kernels are the same at every position computes a convolution.
    #[test]
    fn local_with_shared_kernels_is_a_convolution() {
        let (c, h, w, f) = (2, 5, 4, 3);
        let mut synth = WeightReader::synth(3);
        let kernel = synth
            .take(
                f * c * 9,
                Param::Kernel {
                    fan_in: 18,
                    gain: 1.0,
                },
            )
            .unwrap();
        let mut bytes = Vec::new();
        let locations = h * w;
        let mut values = vec![0.25f32; f * locations];
        for _ in 0..locations {
            values.extend_from_slice(&kernel);
        }
        for v in [0i32, 2, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&0u64.to_le_bytes());
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut r = WeightReader::from_bytes(&bytes).unwrap();
        let spec = LocalSpec {
            filters: f,
            size: 3,
            stride: 1,
            pad: true,
            activation: Activation::Linear,
            gain: 1.0,
        };
        let local = Local::load(&mut r, (c, h, w), &spec).unwrap();
        assert_eq!(r.remaining(), 0);
        let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::from_vec(x, (1, c, h, w), &Device::Cpu).unwrap();
        let got = local.forward(&x).unwrap();
        let k = Tensor::from_vec(kernel, (f, c, 3, 3), &Device::Cpu).unwrap();
        let want = (x.conv2d(&k, 1, 1, 1, 1).unwrap() + 0.25).unwrap();
        let diff: f32 = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    /// darknet's reorg gather is a permutation (every input value lands exactly once) with the
    /// documented output shape.
    #[test]
    fn reorg_is_a_permutation() {
        let r = Reorg::new((8, 4, 6), 2, &Device::Cpu).unwrap();
        assert_eq!(r.out_shape(), (32, 2, 3));
        let mut g: Vec<u32> = r.gather.to_vec1().unwrap();
        g.sort_unstable();
        assert!(g.iter().enumerate().all(|(i, &v)| v as usize == i));
    }
}
