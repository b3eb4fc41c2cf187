//! Network operators: pooling, normalization, resizing, matrix products, reductions, top-k,
//! grid sampling and non-maximum suppression.

use candle_core::{DType, Result, Tensor};

use super::super::proto::{Attrs, NodeProto};
use super::conv::{ConvOp, ConvTransposeOp};
use super::{Op, ParseError, Reduce, axis, floats, ints, req};

/// Largest pad a Conv or MaxPool may declare (real models pad by a few pixels).
pub const MAX_PAD: i64 = 1 << 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Edge,
    Reflect,
}

/// `MaxPool` (2-D).
#[derive(Debug, Clone)]
pub struct Pool {
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub ceil: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coord {
    Asymmetric,
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nearest {
    Floor,
    Ceil,
    RoundPreferFloor,
    RoundPreferCeil,
}

/// `Resize` (and its opset-11+ inputs: roi, scales, sizes), for the last two axes.
#[derive(Debug, Clone)]
pub struct ResizeOp {
    pub mode: ResizeMode,
    pub coord: Coord,
    pub nearest: Nearest,
}

/// `GridSample` (opset 16): bilinear or nearest, zeros or border padding.
#[derive(Debug, Clone)]
pub struct GridSampleOp {
    pub bilinear: bool,
    pub border: bool,
    pub align_corners: bool,
}

pub fn parse(node: &NodeProto, opset: i64, a: &Attrs) -> std::result::Result<Op, ParseError> {
    Ok(match node.op_type.as_str() {
        "Conv" => Op::Conv(Box::new(ConvOp::parse(a)?)),
        "ConvTranspose" => Op::ConvTranspose(Box::new(ConvTransposeOp::parse(a)?)),
        "MaxPool" => Op::MaxPool(parse_pool(a)?),
        "GlobalAveragePool" => Op::GlobalPool(Reduce::Mean),
        "GlobalMaxPool" => Op::GlobalPool(Reduce::Max),
        "BatchNormalization" => Op::BatchNorm {
            epsilon: a.float_or("epsilon", 1e-5)?,
        },
        "InstanceNormalization" => Op::InstanceNorm {
            epsilon: a.float_or("epsilon", 1e-5)?,
        },
        "Resize" => Op::Resize(parse_resize(a)?),
        "Softmax" => Op::Softmax {
            axis: a.int_or("axis", if opset < 13 { 1 } else { -1 })?,
            legacy: opset < 13,
        },
        "MatMul" => Op::MatMul,
        "Gemm" => Op::Gemm {
            alpha: a.float_or("alpha", 1.0)?,
            beta: a.float_or("beta", 1.0)?,
            trans_a: a.int_or("transA", 0)? != 0,
            trans_b: a.int_or("transB", 0)? != 0,
        },
        "LayerNormalization" => Op::LayerNorm {
            axis: a.int_or("axis", -1)?,
            epsilon: a.float_or("epsilon", 1e-5)?,
        },
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2" => {
            parse_reduce(node, opset, a)?
        }
        "RoiAlign" => Op::RoiAlign(Box::new(super::roi::RoiAlignOp::parse(a, opset)?)),
        "ScatterElements" => {
            if a.string_or("reduction", "none")? != "none" {
                return Err(ParseError::Bad(
                    "ScatterElements with a reduction is not supported".into(),
                ));
            }
            Op::ScatterElements {
                axis: a.int_or("axis", 0)?,
            }
        }
        "ArgMax" => Op::ArgMax {
            axis: a.int_or("axis", 0)?,
            keepdims: a.int_or("keepdims", 1)? != 0,
        },
        "TopK" => Op::TopK {
            axis: a.int_or("axis", -1)?,
            largest: a.int_or("largest", 1)? != 0,
            k: (opset < 10)
                .then(|| a.int_or("k", 1))
                .transpose()?
                .map(|k| k.max(0) as usize),
        },
        "GridSample" => Op::GridSample(parse_grid_sample(a)?),
        "NonMaxSuppression" => Op::NonMaxSuppression {
            center_point_box: a.int_or("center_point_box", 0)? != 0,
        },
        "Pad" => parse_pad(opset, a)?,
        _ => return Err(ParseError::Unsupported),
    })
}

fn parse_pool(a: &Attrs) -> std::result::Result<Pool, String> {
    let k = a
        .ints("kernel_shape")?
        .ok_or("MaxPool without kernel_shape")?;
    let two = |v: &[i64], what: &str| match v {
        [x, y] if *x > 0 && *y > 0 => Ok((*x as usize, *y as usize)),
        _ => Err(format!(
            "MaxPool `{what}` {v:?}: only 2-D pooling is supported"
        )),
    };
    if a.ints("dilations")?
        .is_some_and(|d| d.iter().any(|v| *v != 1))
    {
        return Err("MaxPool with dilations is not supported".into());
    }
    if a.string_or("auto_pad", "NOTSET")? != "NOTSET"
        && a.string_or("auto_pad", "NOTSET")? != "VALID"
    {
        return Err("MaxPool auto_pad SAME_* is not supported; export with explicit pads".into());
    }
    let pads = match a.ints("pads")?.as_deref() {
        None => [0; 4],
        Some([t, l, b, r]) if [*t, *l, *b, *r].iter().all(|v| (0..=MAX_PAD).contains(v)) => {
            [*t as usize, *l as usize, *b as usize, *r as usize]
        }
        Some(other) => {
            return Err(format!(
                "MaxPool `pads` {other:?}: only 2-D pooling is supported"
            ));
        }
    };
    Ok(Pool {
        kernel: two(&k, "kernel_shape")?,
        strides: two(&a.ints("strides")?.unwrap_or_else(|| vec![1, 1]), "strides")?,
        pads,
        ceil: a.int_or("ceil_mode", 0)? != 0,
    })
}

fn parse_resize(a: &Attrs) -> std::result::Result<ResizeOp, String> {
    if a.string_or("keep_aspect_ratio_policy", "stretch")? != "stretch" {
        return Err("Resize keep_aspect_ratio_policy other than `stretch` is not supported".into());
    }
    if a.ints("axes")?.is_some() {
        return Err("Resize with `axes` is not supported; export with full scales or sizes".into());
    }
    let mode = match a.string_or("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        other => {
            return Err(format!(
                "Resize mode `{other}` is not supported (nearest, linear)"
            ));
        }
    };
    let coord = match a
        .string_or("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "asymmetric" => Coord::Asymmetric,
        "half_pixel" => Coord::HalfPixel,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        other => {
            return Err(format!(
                "Resize coordinate_transformation_mode `{other}` is not supported"
            ));
        }
    };
    let nearest = match a.string_or("nearest_mode", "round_prefer_floor")?.as_str() {
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        other => return Err(format!("Resize nearest_mode `{other}` is not supported")),
    };
    if a.int_or("antialias", 0)? != 0 {
        return Err("Resize with antialias is not supported".into());
    }
    Ok(ResizeOp {
        mode,
        coord,
        nearest,
    })
}

fn parse_reduce(node: &NodeProto, opset: i64, a: &Attrs) -> std::result::Result<Op, String> {
    let kind = match node.op_type.as_str() {
        "ReduceMean" => Reduce::Mean,
        "ReduceSum" => Reduce::Sum,
        "ReduceMax" => Reduce::Max,
        "ReduceProd" => Reduce::Prod,
        "ReduceL2" => Reduce::L2,
        _ => Reduce::Min,
    };
    // ReduceSum took its axes as an input from opset 13, the others from 18.
    let axes_input = if kind == Reduce::Sum {
        opset >= 13
    } else {
        opset >= 18
    };
    Ok(Op::Reduce {
        kind,
        axes: if axes_input { None } else { a.ints("axes")? },
        keepdims: a.int_or("keepdims", 1)? != 0,
        axes_input,
        noop_empty: a.int_or("noop_with_empty_axes", 0)? != 0,
    })
}

fn parse_grid_sample(a: &Attrs) -> std::result::Result<GridSampleOp, String> {
    let bilinear = match a.string_or("mode", "bilinear")?.as_str() {
        "bilinear" | "linear" => true,
        "nearest" => false,
        other => return Err(format!("GridSample mode `{other}` is not supported")),
    };
    let border = match a.string_or("padding_mode", "zeros")?.as_str() {
        "zeros" => false,
        "border" => true,
        other => {
            return Err(format!(
                "GridSample padding_mode `{other}` is not supported"
            ));
        }
    };
    Ok(GridSampleOp {
        bilinear,
        border,
        align_corners: a.int_or("align_corners", 0)? != 0,
    })
}

fn parse_pad(opset: i64, a: &Attrs) -> std::result::Result<Op, String> {
    let mode = match a.string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "edge" => PadMode::Edge,
        "reflect" => PadMode::Reflect,
        other => return Err(format!("Pad mode `{other}` is not supported")),
    };
    Ok(Op::Pad {
        mode,
        pads: if opset < 11 { a.ints("pads")? } else { None },
        value: a.float_or("value", 0.0)?,
    })
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0)?;
    let t = match op {
        Op::MaxPool(p) => max_pool(x, p)?,
        Op::GlobalPool(Reduce::Mean) => x.flatten_from(2)?.mean_keepdim(2)?.unsqueeze(3)?,
        Op::GlobalPool(_) => x.flatten_from(2)?.max_keepdim(2)?.unsqueeze(3)?,
        Op::BatchNorm { epsilon } => batch_norm(inputs, *epsilon)?,
        Op::InstanceNorm { epsilon } => instance_norm(inputs, *epsilon)?,
        Op::RoiAlign(r) => r.eval(inputs)?,
        Op::ScatterElements { axis } => super::roi::scatter_elements(inputs, *axis)?,
        Op::Resize(r) => resize(inputs, r)?,
        Op::Softmax { axis: a, legacy } => softmax(x, *a, *legacy)?,
        Op::MatMul => matmul(x, req(inputs, 1)?)?,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => gemm(inputs, *alpha, *beta, *trans_a, *trans_b)?,
        Op::LayerNorm { axis: a, epsilon } => layer_norm(inputs, *a, *epsilon)?,
        Op::Reduce {
            kind,
            axes,
            keepdims,
            axes_input,
            noop_empty,
        } => {
            let axes = if *axes_input {
                inputs
                    .get(1)
                    .and_then(Option::as_ref)
                    .map(ints)
                    .transpose()?
            } else {
                axes.clone()
            };
            reduce(x, *kind, axes, *keepdims, *noop_empty)?
        }
        Op::ArgMax { axis: a, keepdims } => {
            let ax = axis(*a, x.rank())?;
            let m = x.argmax_keepdim(ax)?.to_dtype(DType::I64)?;
            if *keepdims { m } else { m.squeeze(ax)? }
        }
        Op::TopK {
            axis: a,
            largest,
            k,
        } => return topk(inputs, *a, *largest, *k),
        Op::GridSample(g) => grid_sample(x, req(inputs, 1)?, g)?,
        Op::NonMaxSuppression { center_point_box } => nms(inputs, *center_point_box)?,
        Op::Pad { mode, pads, value } => pad(inputs, *mode, pads.as_deref(), *value)?,
        other => candle_core::bail!("no evaluator for {other:?}"),
    };
    Ok(vec![t])
}

fn max_pool(x: &Tensor, p: &Pool) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let out_len = |n: usize, k: usize, s: usize, lo: usize, hi: usize| -> Result<usize> {
        let span = (n + lo + hi).checked_sub(k).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "MaxPool: window {k} larger than padded input {}",
                n + lo + hi
            ))
        })?;
        let mut o = if p.ceil { span.div_ceil(s) } else { span / s } + 1;
        // A last window starting in the trailing padding is dropped (as PyTorch and ONNX Runtime do).
        if p.ceil && (o - 1) * s >= n + lo {
            o -= 1;
        }
        Ok(o)
    };
    let [t, l, bo, r] = p.pads;
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.strides;
    let oh = out_len(h, kh, sh, t, bo)?;
    let ow = out_len(w, kw, sw, l, r)?;
    super::array::bounded(&[b, c, oh, ow])?;
    if b * c * oh * ow == 0 {
        return Tensor::zeros((b, c, oh, ow), DType::F32, x.device());
    }
    if !x.device().is_cpu() {
        return max_pool_on_device(x, p, (oh, ow));
    }
    let src = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let window = crate::detect::pool::Window {
        kernel: (kh, kw),
        stride: (sh, sw),
        top_left: (t, l),
    };
    let out = crate::detect::pool::pool_planes(&src, (b * c, h, w), (oh, ow), window);
    Tensor::from_vec(out, (b, c, oh, ow), x.device())
}

/// MaxPool with Candle's kernel, where the tensor lives (a GPU): the padding replicates the edge,
/// which equals ONNX's −∞ padding because every window holds the edge value it copies (pads are
/// smaller than the kernel, and a ceil-mode window never starts in the trailing padding).
fn max_pool_on_device(x: &Tensor, p: &Pool, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let [t, l, bo, r] = p.pads;
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.strides;
    if t >= kh || bo >= kh || l >= kw || r >= kw {
        candle_core::bail!(
            "MaxPool: pads {:?} as large as the kernel {:?}",
            p.pads,
            p.kernel
        );
    }
    // Enough trailing padding for `oh × ow` windows (ceil mode can need more than `pads`).
    let bo = bo.max(((oh - 1) * sh + kh).saturating_sub(h + t));
    let r = r.max(((ow - 1) * sw + kw).saturating_sub(w + l));
    let padded = x.pad_with_same(2, t, bo)?.pad_with_same(3, l, r)?;
    padded
        .max_pool2d_with_stride((kh, kw), (sh, sw))?
        .narrow(2, 0, oh)?
        .narrow(3, 0, ow)
}

fn batch_norm(inputs: &[Option<Tensor>], eps: f32) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let shape = |t: &Tensor| -> Result<Tensor> {
        let mut dims = vec![1usize; x.rank()];
        dims[1] = t.elem_count();
        t.reshape(dims)
    };
    let scale = shape(req(inputs, 1)?)?;
    let bias = shape(req(inputs, 2)?)?;
    let mean = shape(req(inputs, 3)?)?;
    let var = shape(req(inputs, 4)?)?;
    let k = scale.broadcast_div(&(var + f64::from(eps))?.sqrt()?)?;
    x.broadcast_sub(&mean)?
        .broadcast_mul(&k)?
        .broadcast_add(&bias)
}

/// `scale · (x − mean) / √(var + ε) + bias`, mean and (biased) variance over each sample's
/// channel.
fn instance_norm(inputs: &[Option<Tensor>], eps: f32) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let flat = x.reshape((n, c, ()))?.to_dtype(DType::F32)?;
    let mean = flat.mean_keepdim(2)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?;
    let normed = centred.broadcast_div(&(var + f64::from(eps))?.sqrt()?)?;
    let per_channel = |t: &Tensor| t.reshape((1, c, 1));
    normed
        .broadcast_mul(&per_channel(req(inputs, 1)?)?)?
        .broadcast_add(&per_channel(req(inputs, 2)?)?)?
        .reshape(x.dims())
}

/// The product along `ax`, kept as a dimension of 1 (Candle has no product reduction; these
/// are shape computations: small, integer, exact in f64).
fn prod_keepdim(t: &Tensor, ax: usize) -> Result<Tensor> {
    let last = t.rank() - 1;
    let moved = t.transpose(ax, last)?.contiguous()?;
    let n = moved.dim(last)?;
    let mut shape = moved.dims().to_vec();
    shape[last] = 1;
    let groups: usize = shape.iter().product();
    let v: Vec<f64> = moved.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let out: Vec<f64> = (0..groups)
        .map(|g| v[g * n..(g + 1) * n].iter().product())
        .collect();
    Tensor::from_vec(out, shape, t.device())?
        .to_dtype(t.dtype())?
        .transpose(ax, last)?
        .contiguous()
}

fn softmax(x: &Tensor, a: i64, legacy: bool) -> Result<Tensor> {
    let ax = axis(a, x.rank())?;
    if legacy {
        // opset < 13: the input is seen as 2-D [prod(dims[..axis]), prod(dims[axis..])].
        let outer: usize = x.dims()[..ax].iter().product();
        let flat = x.reshape((outer, ()))?;
        return candle_nn::ops::softmax_last_dim(&flat.contiguous()?)?.reshape(x.dims());
    }
    if ax + 1 == x.rank() {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return candle_nn::ops::softmax(x, ax);
    }
    softmax_inner_axis(x, ax)
}

/// Softmax over a middle axis on the CPU without transposing: for each outer index, the axis runs
/// over rows of `inner` contiguous values, so max, exp and sum are row operations that vectorize
/// (Ultralytics' DFL softmax over `[1, 16, 4, anchors]` axis 1 took 7 ms through Candle's generic
/// path at 640).
fn softmax_inner_axis(x: &Tensor, ax: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (outer, n) = (dims[..ax].iter().product::<usize>(), dims[ax]);
    let inner: usize = dims[ax + 1..].iter().product();
    if n * inner == 0 {
        return Ok(x.clone());
    }
    let mut v = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    use rayon::prelude::*;
    v.par_chunks_mut(n * inner).for_each(|block| {
        let mut max = vec![f32::NEG_INFINITY; inner];
        for row in block.chunks_exact(inner) {
            max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
        }
        let mut sum = vec![0f32; inner];
        for row in block.chunks_exact_mut(inner) {
            for ((v, m), s) in row.iter_mut().zip(&max).zip(sum.iter_mut()) {
                *v = crate::detect::conv::fast_exp(*v - m);
                *s += *v;
            }
        }
        for row in block.chunks_exact_mut(inner) {
            row.iter_mut().zip(&sum).for_each(|(v, s)| *v /= s);
        }
    });
    debug_assert_eq!(v.len(), outer * n * inner);
    Tensor::from_vec(v, dims, x.device())
}

/// numpy `matmul`: 1-D operands promoted and their axis dropped again; the output bounded.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a2, b2) = (
        if a.rank() == 1 {
            a.unsqueeze(0)?
        } else {
            a.clone()
        },
        if b.rank() == 1 {
            b.unsqueeze(1)?
        } else {
            b.clone()
        },
    );
    if a2.rank() < 2 || b2.rank() < 2 {
        candle_core::bail!("MatMul of a scalar");
    }
    let (m, n) = (a2.dims()[a2.rank() - 2], b2.dims()[b2.rank() - 1]);
    let batch = a2.dims()[..a2.rank() - 2]
        .iter()
        .product::<usize>()
        .max(b2.dims()[..b2.rank() - 2].iter().product());
    super::array::bounded(&[batch, m, n])?;
    let mut y = a2.contiguous()?.broadcast_matmul(&b2.contiguous()?)?;
    if b.rank() == 1 {
        y = y.squeeze(y.rank() - 1)?;
    }
    if a.rank() == 1 {
        let at = y.rank() - if b.rank() == 1 { 1 } else { 2 };
        y = y.squeeze(at)?;
    }
    Ok(y)
}

fn gemm(inputs: &[Option<Tensor>], alpha: f32, beta: f32, ta: bool, tb: bool) -> Result<Tensor> {
    let a = req(inputs, 0)?;
    let b = req(inputs, 1)?;
    let a = if ta { a.t()? } else { a.clone() };
    let b = if tb { b.t()? } else { b.clone() };
    let mut y = a.contiguous()?.matmul(&b.contiguous()?)?;
    if alpha != 1.0 {
        y = (y * f64::from(alpha))?;
    }
    match inputs.get(2).and_then(Option::as_ref) {
        Some(c) if beta != 0.0 => y.broadcast_add(&(c * f64::from(beta))?),
        _ => Ok(y),
    }
}

fn layer_norm(inputs: &[Option<Tensor>], a: i64, eps: f32) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let ax = axis(a, x.rank())?;
    let outer: usize = x.dims()[..ax].iter().product();
    let flat = x.reshape((outer, ()))?;
    let mean = flat.mean_keepdim(1)?;
    let centered = flat.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?;
    let normed = centered
        .broadcast_div(&(var + f64::from(eps))?.sqrt()?)?
        .reshape(x.dims())?;
    let scaled = normed.broadcast_mul(req(inputs, 1)?)?;
    match inputs.get(2).and_then(Option::as_ref) {
        Some(b) => scaled.broadcast_add(b),
        None => Ok(scaled),
    }
}

fn reduce(
    x: &Tensor,
    kind: Reduce,
    axes: Option<Vec<i64>>,
    keep: bool,
    noop_empty: bool,
) -> Result<Tensor> {
    let mut axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&v| axis(v, x.rank()))
            .collect::<Result<_>>()?,
        _ if noop_empty => return Ok(x.clone()),
        _ => (0..x.rank()).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    // L2: Σ x² over the axes, one root at the end
    let mut t = if kind == Reduce::L2 {
        x.sqr()?
    } else {
        x.clone()
    };
    for &ax in axes.iter().rev() {
        t = match kind {
            Reduce::Mean => t.mean_keepdim(ax)?,
            Reduce::Sum => t.sum_keepdim(ax)?,
            Reduce::Max => t.max_keepdim(ax)?,
            Reduce::Min => t.min_keepdim(ax)?,
            Reduce::Prod => prod_keepdim(&t, ax)?,
            Reduce::L2 => t.sum_keepdim(ax)?,
        };
        if !keep {
            t = t.squeeze(ax)?;
        }
    }
    if kind == Reduce::L2 {
        t = t.sqrt()?;
    }
    Ok(t)
}

fn topk(
    inputs: &[Option<Tensor>],
    a: i64,
    largest: bool,
    k_attr: Option<usize>,
) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0)?;
    let k = match k_attr {
        Some(k) => k,
        None => ints(req(inputs, 1)?)?.first().copied().unwrap_or(0).max(0) as usize,
    };
    let ax = axis(a, x.rank())?;
    let n = x.dims()[ax];
    if k > n {
        candle_core::bail!("TopK: k {k} exceeds the axis length {n}");
    }
    let last = x.rank() - 1;
    let moved = x.transpose(ax, last)?.contiguous()?;
    let rows = moved.elem_count() / n.max(1);
    let v = moved
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let mut vals = Vec::with_capacity(rows * k);
    let mut idx = Vec::with_capacity(rows * k);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for r in 0..rows {
        let row = &v[r * n..(r + 1) * n];
        order.clear();
        order.extend(0..n);
        // Stable: equal values keep index order, as ONNX Runtime returns them.
        if largest {
            order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        } else {
            order.sort_by(|&i, &j| row[i].total_cmp(&row[j]));
        }
        for &i in &order[..k] {
            vals.push(row[i]);
            idx.push(i as i64);
        }
    }
    let mut dims = moved.dims().to_vec();
    dims[last] = k;
    let vals = Tensor::from_vec(vals, dims.clone(), x.device())?
        .to_dtype(x.dtype())?
        .transpose(ax, last)?
        .contiguous()?;
    let idx = Tensor::from_vec(idx, dims, x.device())?
        .transpose(ax, last)?
        .contiguous()?;
    Ok(vec![vals, idx])
}

/// The source coordinate of output index `o` along an axis of `n_in` → `n_out` with `scale`.
fn source_coord(o: usize, n_in: usize, n_out: usize, scale: f32, c: Coord) -> f32 {
    let o = o as f32;
    match c {
        Coord::Asymmetric => o / scale,
        Coord::HalfPixel => (o + 0.5) / scale - 0.5,
        Coord::PytorchHalfPixel if n_out > 1 => (o + 0.5) / scale - 0.5,
        Coord::PytorchHalfPixel => 0.0,
        Coord::AlignCorners if n_out > 1 => o * (n_in as f32 - 1.0) / (n_out as f32 - 1.0),
        Coord::AlignCorners => 0.0,
    }
}

fn nearest_index(x: f32, n: usize, m: Nearest) -> usize {
    let i = match m {
        Nearest::Floor => x.floor(),
        Nearest::Ceil => x.ceil(),
        Nearest::RoundPreferFloor => {
            if (x - x.floor() - 0.5).abs() < f32::EPSILON {
                x.floor()
            } else {
                x.round()
            }
        }
        Nearest::RoundPreferCeil => (x + 0.5).floor(),
    };
    i.clamp(0.0, n as f32 - 1.0) as usize
}

/// Output size and scale of the last two axes from `scales` (input 2) or `sizes` (input 3).
fn resize_target(inputs: &[Option<Tensor>], x: &Tensor) -> Result<[(usize, f32); 2]> {
    let r = x.rank();
    let dims = x.dims();
    let sizes = inputs
        .get(3)
        .and_then(Option::as_ref)
        .filter(|t| t.elem_count() > 0);
    let scales = inputs
        .get(2)
        .and_then(Option::as_ref)
        .filter(|t| t.elem_count() > 0);
    let (out, sc): (Vec<usize>, Vec<f32>) = if let Some(s) = sizes {
        let s = super::array::to_dims(&ints(s)?)?;
        let sc = s
            .iter()
            .zip(dims)
            .map(|(o, i)| *o as f32 / *i as f32)
            .collect();
        (s, sc)
    } else if let Some(s) = scales {
        let s = floats(s)?;
        let o = s
            .iter()
            .zip(dims)
            .map(|(s, i)| (*i as f32 * s).floor() as usize)
            .collect();
        (o, s)
    } else {
        candle_core::bail!("Resize needs scales or sizes");
    };
    if out.len() != r || out[..r - 2] != dims[..r - 2] {
        candle_core::bail!(
            "Resize: only the last two axes can be resized ({:?} → {out:?})",
            dims
        );
    }
    super::array::to_dims(&out.iter().map(|&v| v as i64).collect::<Vec<_>>())?;
    Ok([(out[r - 2], sc[r - 2]), (out[r - 1], sc[r - 1])])
}

/// One axis's taps: (index0, index1, weight of index1) per output position.
fn axis_taps(n_out: usize, n_in: usize, scale: f32, op: &ResizeOp) -> Vec<(usize, usize, f32)> {
    (0..n_out)
        .map(|o| {
            let c = source_coord(o, n_in, n_out, scale, op.coord);
            match op.mode {
                ResizeMode::Nearest => {
                    let i = nearest_index(c, n_in, op.nearest);
                    (i, i, 0.0)
                }
                ResizeMode::Linear => {
                    let c = c.clamp(0.0, n_in as f32 - 1.0);
                    let i0 = c.floor() as usize;
                    let i1 = (i0 + 1).min(n_in - 1);
                    (i0, i1, c - i0 as f32)
                }
            }
        })
        .collect()
}

fn resize(inputs: &[Option<Tensor>], op: &ResizeOp) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    if x.rank() < 2 {
        candle_core::bail!("Resize of a rank-{} tensor", x.rank());
    }
    let [(oh, sh), (ow, sw)] = resize_target(inputs, x)?;
    if x.elem_count() == 0 || oh * ow == 0 {
        let mut dims = x.dims().to_vec();
        let r = dims.len();
        (dims[r - 2], dims[r - 1]) = (oh, ow);
        return Tensor::zeros(dims, x.dtype(), x.device());
    }
    let dims = x.dims().to_vec();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let planes = x.elem_count() / (h * w).max(1);
    let src = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (ty, tx) = (axis_taps(oh, h, sh, op), axis_taps(ow, w, sw, op));
    if !x.device().is_cpu() {
        return resize_on_device(x, &ty, &tx);
    }
    let mut out = vec![0f32; planes * oh * ow];
    use rayon::prelude::*;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(p, dst)| {
            let s = &src[p * h * w..(p + 1) * h * w];
            for (oy, &(y0, y1, fy)) in ty.iter().enumerate() {
                for (ox, &(x0, x1, fx)) in tx.iter().enumerate() {
                    let top = s[y0 * w + x0] * (1.0 - fx) + s[y0 * w + x1] * fx;
                    let v = if fy == 0.0 {
                        top
                    } else {
                        top * (1.0 - fy) + (s[y1 * w + x0] * (1.0 - fx) + s[y1 * w + x1] * fx) * fy
                    };
                    dst[oy * ow + ox] = if fx == 0.0 && fy == 0.0 {
                        s[y0 * w + x0]
                    } else {
                        v
                    };
                }
            }
        });
    let mut od = dims;
    let r = od.len();
    od[r - 2] = oh;
    od[r - 1] = ow;
    Tensor::from_vec(out, od, x.device())?.to_dtype(x.dtype())
}

/// Resize where the tensor lives (a GPU), from the same taps as the host path: gathers along the
/// last two axes and a blend of each pair. Only the taps (a few KB) cross the bus.
fn resize_on_device(
    x: &Tensor,
    ty: &[(usize, usize, f32)],
    tx: &[(usize, usize, f32)],
) -> Result<Tensor> {
    let r = x.rank();
    let dev = x.device();
    let axis = |t: &Tensor, taps: &[(usize, usize, f32)], dim: usize| -> Result<Tensor> {
        let i0: Vec<u32> = taps.iter().map(|v| v.0 as u32).collect();
        let a = t
            .contiguous()?
            .index_select(&Tensor::new(i0.as_slice(), dev)?, dim)?;
        if taps.iter().all(|v| v.2 == 0.0) {
            return Ok(a);
        }
        let i1: Vec<u32> = taps.iter().map(|v| v.1 as u32).collect();
        let b = t
            .contiguous()?
            .index_select(&Tensor::new(i1.as_slice(), dev)?, dim)?;
        let mut shape = vec![1usize; t.rank()];
        shape[dim] = taps.len();
        let f: Vec<f32> = taps.iter().map(|v| v.2).collect();
        let f = Tensor::from_vec(f, shape, dev)?.to_dtype(t.dtype())?;
        a.broadcast_add(&(b - &a)?.broadcast_mul(&f)?)
    };
    let rows = axis(x, ty, r - 2)?;
    axis(&rows, tx, r - 1)
}

fn grid_sample(x: &Tensor, grid: &Tensor, g: &GridSampleOp) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (gn, oh, ow, two) = grid.dims4()?;
    if gn != n || two != 2 {
        candle_core::bail!(
            "GridSample: grid {:?} for input {:?}",
            grid.dims(),
            x.dims()
        );
    }
    let src = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let gv = grid.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let unnorm = |v: f32, size: usize| {
        if g.align_corners {
            (v + 1.0) / 2.0 * (size as f32 - 1.0)
        } else {
            ((v + 1.0) * size as f32 - 1.0) / 2.0
        }
    };
    let mut out = vec![0f32; n * c * oh * ow];
    for b in 0..n {
        for p in 0..oh * ow {
            let gx = unnorm(gv[(b * oh * ow + p) * 2], w);
            let gy = unnorm(gv[(b * oh * ow + p) * 2 + 1], h);
            let (gx, gy) = if g.border {
                (gx.clamp(0.0, w as f32 - 1.0), gy.clamp(0.0, h as f32 - 1.0))
            } else {
                (gx, gy)
            };
            let sample = |plane: &[f32], yy: isize, xx: isize| -> f32 {
                if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                    0.0
                } else {
                    plane[yy as usize * w + xx as usize]
                }
            };
            for ch in 0..c {
                let plane = &src[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                let v = if g.bilinear {
                    let (x0, y0) = (gx.floor(), gy.floor());
                    let (fx, fy) = (gx - x0, gy - y0);
                    let (x0, y0) = (x0 as isize, y0 as isize);
                    sample(plane, y0, x0) * (1.0 - fx) * (1.0 - fy)
                        + sample(plane, y0, x0 + 1) * fx * (1.0 - fy)
                        + sample(plane, y0 + 1, x0) * (1.0 - fx) * fy
                        + sample(plane, y0 + 1, x0 + 1) * fx * fy
                } else {
                    sample(
                        plane,
                        gy.round_ties_even() as isize,
                        gx.round_ties_even() as isize,
                    )
                };
                out[(b * c + ch) * oh * ow + p] = v;
            }
        }
    }
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

/// ONNX NonMaxSuppression: per batch and class, greedy by score; `[selected, 3]` of
/// `(batch, class, box)`.
fn nms(inputs: &[Option<Tensor>], center: bool) -> Result<Tensor> {
    let boxes = req(inputs, 0)?;
    let scores = req(inputs, 1)?;
    let (nb, nbox, four) = boxes.dims3()?;
    let (sb, nc, sn) = scores.dims3()?;
    if four != 4 || sb != nb || sn != nbox {
        candle_core::bail!(
            "NonMaxSuppression: boxes {:?}, scores {:?}",
            boxes.dims(),
            scores.dims()
        );
    }
    let opt = |i: usize| {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .filter(|t| t.elem_count() > 0)
    };
    let max_out = opt(2)
        .map(ints)
        .transpose()?
        .map_or(0, |v| v[0].max(0) as usize);
    let iou_thr = opt(3).map(floats).transpose()?.map_or(0.0, |v| v[0]);
    let score_thr = opt(4).map(floats).transpose()?.map(|v| v[0]);
    let bv = boxes.flatten_all()?.to_vec1::<f32>()?;
    let sv = scores.flatten_all()?.to_vec1::<f32>()?;
    let corners = |b: usize, i: usize| -> [f32; 4] {
        let v = &bv[(b * nbox + i) * 4..(b * nbox + i) * 4 + 4];
        if center {
            [
                v[0] - v[2] / 2.0,
                v[1] - v[3] / 2.0,
                v[0] + v[2] / 2.0,
                v[1] + v[3] / 2.0,
            ]
        } else {
            [
                v[0].min(v[2]),
                v[1].min(v[3]),
                v[0].max(v[2]),
                v[1].max(v[3]),
            ]
        }
    };
    let iou = |a: [f32; 4], b: [f32; 4]| {
        let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let inter = iw * ih;
        let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    };
    let mut sel: Vec<i64> = Vec::new();
    for b in 0..nb {
        for cl in 0..nc {
            let s = &sv[(b * nc + cl) * nbox..(b * nc + cl + 1) * nbox];
            let mut order: Vec<usize> = (0..nbox)
                .filter(|&i| score_thr.is_none_or(|t| s[i] > t))
                .collect();
            order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
            let mut kept = KeptBoxes::default();
            for i in order {
                if kept.len() >= max_out {
                    break;
                }
                let c = corners(b, i);
                if iou_thr < 0.0 {
                    // every pair suppresses, overlapping or not
                    if kept.len() > 0 {
                        continue;
                    }
                } else if kept.overlapping(c).any(|k| iou(*k, c) > iou_thr) {
                    continue;
                }
                kept.insert(c);
                sel.extend([b as i64, cl as i64, i as i64]);
            }
        }
    }
    let n = sel.len() / 3;
    Tensor::from_vec(sel, (n, 3), boxes.device())
}

/// The boxes NMS has kept, ordered by left edge, so a candidate is compared only with those
/// that can overlap it horizontally (a box disjoint from it has IoU 0 and cannot suppress it).
/// Exports that run every class in one call, offset apart (torchvision's `batched_nms`), keep
/// thousands of boxes that no candidate of another class can touch.
#[derive(Default)]
struct KeptBoxes {
    by_left: Vec<[f32; 4]>,
    widest: f32,
}

impl KeptBoxes {
    fn len(&self) -> usize {
        self.by_left.len()
    }

    fn insert(&mut self, c: [f32; 4]) {
        let at = self.by_left.partition_point(|k| k[0] < c[0]);
        self.by_left.insert(at, c);
        self.widest = self.widest.max(c[2] - c[0]);
    }

    /// Kept boxes whose left edge lies within the widest box's width of `c`'s span.
    fn overlapping(&self, c: [f32; 4]) -> impl Iterator<Item = &[f32; 4]> {
        let lo = self.by_left.partition_point(|k| k[0] < c[0] - self.widest);
        let hi = self.by_left.partition_point(|k| k[0] < c[2]);
        self.by_left[lo..hi.max(lo)].iter()
    }
}

fn pad(
    inputs: &[Option<Tensor>],
    mode: PadMode,
    attr: Option<&[i64]>,
    value: f32,
) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let r = x.rank();
    let pads = match attr {
        Some(p) => p.to_vec(),
        None => ints(req(inputs, 1)?)?,
    };
    let value = match inputs
        .get(2)
        .and_then(Option::as_ref)
        .filter(|t| t.elem_count() > 0)
    {
        Some(v) => floats(v)?[0],
        None => value,
    };
    let axes: Vec<usize> = match inputs.get(3).and_then(Option::as_ref) {
        Some(a) => ints(a)?
            .iter()
            .map(|&v| axis(v, r))
            .collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        candle_core::bail!("Pad: {} pads for {} axes", pads.len(), axes.len());
    }
    let mut out_dims: Vec<i64> = x.dims().iter().map(|&d| d as i64).collect();
    for (i, &ax) in axes.iter().enumerate() {
        out_dims[ax] = out_dims[ax]
            .saturating_add(pads[i])
            .saturating_add(pads[i + axes.len()])
            .max(0);
    }
    super::array::to_dims(&out_dims)?;
    let mut t = x.clone();
    for (i, &ax) in axes.iter().enumerate() {
        let (lo, hi) = (pads[i], pads[i + axes.len()]);
        // Negative pads crop.
        if lo < 0 || hi < 0 {
            let n = t.dims()[ax] as i64;
            let start = (-lo).max(0);
            let len = (n - start - (-hi).max(0)).max(0);
            t = t.narrow(ax, start as usize, len as usize)?;
        }
        let (lo, hi) = (lo.max(0) as usize, hi.max(0) as usize);
        if lo == 0 && hi == 0 {
            continue;
        }
        t = match mode {
            PadMode::Edge => t.pad_with_same(ax, lo, hi)?,
            PadMode::Constant if value == 0.0 => t.pad_with_zeros(ax, lo, hi)?,
            PadMode::Constant => {
                let side = |n: usize| -> Result<Tensor> {
                    let mut d = t.dims().to_vec();
                    d[ax] = n;
                    Tensor::full(value, d, t.device())?.to_dtype(t.dtype())
                };
                Tensor::cat(&[&side(lo)?, &t, &side(hi)?], ax)?
            }
            PadMode::Reflect => reflect(&t, ax, lo, hi)?,
        };
    }
    t.contiguous()
}

fn reflect(t: &Tensor, ax: usize, lo: usize, hi: usize) -> Result<Tensor> {
    let n = t.dims()[ax];
    if lo >= n || hi >= n {
        candle_core::bail!("Pad reflect: pad larger than the axis");
    }
    let mut idx: Vec<i64> = (1..=lo).rev().map(|i| i as i64).collect();
    idx.extend(0..n as i64);
    idx.extend((0..hi).map(|i| (n - 2 - i) as i64));
    t.contiguous()?
        .index_select(&Tensor::new(idx, t.device())?, ax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::onnx::ops::max_diff;
    use candle_core::Device;

    fn pattern(dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as u64 * 2_654_435_761) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// The GPU's MaxPool (Candle's kernel on edge-replicated padding) gives the host's values,
    /// here both on the CPU: YOLO's SPPF (5/1/2), the ResNet stem (3/2/1), ceil mode, odd sizes.
    #[test]
    fn max_pool_on_device_equals_the_host_kernel() {
        for (dims, kernel, strides, pads, ceil) in [
            ([1, 4, 20, 20], (5, 5), (1, 1), [2, 2, 2, 2], false),
            ([2, 3, 17, 13], (3, 3), (2, 2), [1, 1, 1, 1], false),
            ([1, 2, 9, 11], (3, 3), (2, 2), [0, 0, 0, 0], true),
            ([1, 2, 8, 7], (2, 2), (1, 1), [0, 0, 1, 1], false),
        ] {
            let x = pattern(&dims);
            let p = Pool {
                kernel,
                strides,
                pads,
                ceil,
            };
            let host = max_pool(&x, &p).unwrap();
            let (_, _, oh, ow) = host.dims4().unwrap();
            let dev = max_pool_on_device(&x, &p, (oh, ow)).unwrap();
            assert_eq!(
                max_diff(&host, &dev),
                0.0,
                "{dims:?} k{kernel:?} s{strides:?} p{pads:?} ceil {ceil}"
            );
        }
    }

    /// The GPU's Resize (gathers and blends) against the host's, nearest and linear.
    #[test]
    fn resize_on_device_equals_the_host_kernel() {
        let x = pattern(&[1, 3, 10, 14]);
        for (mode, coord, nearest, out) in [
            (
                ResizeMode::Nearest,
                Coord::Asymmetric,
                Nearest::Floor,
                (20, 28),
            ),
            (
                ResizeMode::Nearest,
                Coord::HalfPixel,
                Nearest::RoundPreferFloor,
                (15, 9),
            ),
            (
                ResizeMode::Linear,
                Coord::HalfPixel,
                Nearest::Floor,
                (23, 31),
            ),
            (
                ResizeMode::Linear,
                Coord::AlignCorners,
                Nearest::Floor,
                (7, 5),
            ),
        ] {
            let op = ResizeOp {
                mode,
                coord,
                nearest,
            };
            let sizes = Tensor::new(&[1i64, 3, out.0, out.1], &Device::Cpu).unwrap();
            let host = resize(&[Some(x.clone()), None, None, Some(sizes)], &op).unwrap();
            let ty = axis_taps(out.0 as usize, 10, out.0 as f32 / 10.0, &op);
            let tx = axis_taps(out.1 as usize, 14, out.1 as f32 / 14.0, &op);
            let dev = resize_on_device(&x, &ty, &tx).unwrap();
            assert!(max_diff(&host, &dev) < 1e-5, "{mode:?} {coord:?} {out:?}");
        }
    }
}
