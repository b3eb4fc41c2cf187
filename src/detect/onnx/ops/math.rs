//! Element-wise operators.

use candle_core::{DType, Result, Tensor};

use super::{Binary, Unary, floats};

/// Large f32 tensors on the CPU: element-wise work split across the rayon pool (Candle's CPU
/// element-wise ops run on one thread).
const PARALLEL_MIN: usize = 1 << 15;

/// `f` over a contiguous f32 CPU tensor's values, in parallel; `None` when `x` is not one.
fn par_map(x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Option<Result<Tensor>> {
    use rayon::prelude::*;
    if x.dtype() != DType::F32 || x.elem_count() < PARALLEL_MIN {
        return None;
    }
    let (storage, layout) = x.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*storage else {
        return None;
    };
    let out: Vec<f32> = v[start..end]
        .par_iter()
        .with_min_len(4096)
        .map(|&a| f(a))
        .collect();
    Some(Tensor::from_vec(out, x.shape(), x.device()))
}

/// `f` over two same-shape contiguous f32 CPU tensors, in parallel; `None` otherwise.
fn par_zip(x: &Tensor, y: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Option<Result<Tensor>> {
    use rayon::prelude::*;
    if x.dtype() != DType::F32
        || y.dtype() != DType::F32
        || x.dims() != y.dims()
        || x.elem_count() < PARALLEL_MIN
    {
        return None;
    }
    let (sa, la) = x.storage_and_layout();
    let (sb, lb) = y.storage_and_layout();
    let (a0, a1) = la.contiguous_offsets()?;
    let (b0, b1) = lb.contiguous_offsets()?;
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(a)) = &*sa else {
        return None;
    };
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(b)) = &*sb else {
        return None;
    };
    let out: Vec<f32> = a[a0..a1]
        .par_iter()
        .with_min_len(4096)
        .zip(b[b0..b1].par_iter())
        .map(|(&p, &q)| f(p, q))
        .collect();
    Some(Tensor::from_vec(out, x.shape(), x.device()))
}

pub fn unary(u: Unary, x: &Tensor) -> Result<Tensor> {
    if u == Unary::Sigmoid
        && let Some(r) = par_map(x, |v| 1.0 / (1.0 + crate::detect::conv::fast_exp(-v)))
    {
        return r;
    }
    match u {
        Unary::Identity => Ok(x.clone()),
        Unary::Sigmoid => candle_nn::ops::sigmoid(x),
        Unary::Relu => x.relu(),
        Unary::LeakyRelu(alpha) => {
            let neg = (x.minimum(0f32)? * f64::from(alpha))?;
            x.relu()? + neg
        }
        Unary::HardSigmoid(alpha, beta) => x
            .affine(f64::from(alpha), f64::from(beta))?
            .clamp(0f32, 1f32),
        Unary::HardSwish => x * x.affine(1.0 / 6.0, 0.5)?.clamp(0f32, 1f32)?,
        Unary::Exp => x.exp(),
        Unary::Log => x.log(),
        Unary::Sqrt => x.sqrt(),
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Tanh => x.tanh(),
        Unary::Erf => x.erf(),
        Unary::Neg => x.neg(),
        Unary::Abs => x.abs(),
        Unary::Reciprocal => x.recip(),
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        // ln(1 + e^x), computed as max(x, 0) + ln(1 + e^-|x|) so large x does not overflow.
        Unary::Softplus => x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?,
        Unary::Not => x.eq(0u8),
    }
}

pub fn binary(b: Binary, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let shape = x
        .shape()
        .broadcast_shape_binary_op(y.shape(), "broadcast")?;
    super::array::bounded(shape.dims())?;
    if b == Binary::Div && x.dtype() != DType::F32 {
        return int_div(x, y);
    }
    let fast = match b {
        Binary::Add => par_zip(x, y, |p, q| p + q),
        Binary::Sub => par_zip(x, y, |p, q| p - q),
        Binary::Mul => par_zip(x, y, |p, q| p * q),
        Binary::Div => par_zip(x, y, |p, q| p / q),
        _ => None,
    };
    if let Some(r) = fast {
        return r;
    }
    match b {
        Binary::Add => x.broadcast_add(y),
        Binary::Sub => x.broadcast_sub(y),
        Binary::Mul => x.broadcast_mul(y),
        Binary::Div => x.broadcast_div(y),
        Binary::Pow => pow(x, y),
        Binary::Max => x.broadcast_maximum(y),
        Binary::Min => x.broadcast_minimum(y),
        Binary::Equal => x.broadcast_eq(y),
        Binary::Less => x.broadcast_lt(y),
        Binary::LessOrEqual => x.broadcast_le(y),
        Binary::Greater => x.broadcast_gt(y),
        Binary::GreaterOrEqual => x.broadcast_ge(y),
        Binary::And => x.ne(0u8)?.broadcast_mul(&y.ne(0u8)?),
        Binary::Or => x.ne(0u8)?.broadcast_maximum(&y.ne(0u8)?),
        Binary::Xor => x.ne(0u8)?.broadcast_ne(&y.ne(0u8)?),
        Binary::Mod { fmod } => modulo(x, y, fmod),
    }
}

/// Integer division (truncating, as ONNX Runtime), refusing a zero divisor instead of panicking.
fn int_div(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (x, y) = broadcast_pair(x, y)?;
    let (a, b) = (super::ints(&x)?, super::ints(&y)?);
    let v = a
        .iter()
        .zip(&b)
        .map(|(a, b)| {
            a.checked_div(*b)
                .ok_or_else(|| candle_core::Error::Msg(format!("integer Div of {a} by {b}")))
        })
        .collect::<Result<Vec<i64>>>()?;
    Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())
}

/// `x^y`. A scalar exponent (the common case: `(2σ)²` in YOLOv5's head, `x^2` in a hand-written
/// LayerNorm) takes the exact fast paths; otherwise element by element.
fn pow(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    // The result takes the base's type (an integer base stays integer).
    let base_type = x.dtype();
    pow_f32(&x.to_dtype(DType::F32)?, y)?.to_dtype(base_type)
}

fn pow_f32(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let x = x.clone();
    if y.elem_count() == 1 {
        let e = floats(y)?[0];
        return match e {
            1.0 => Ok(x),
            2.0 => x.sqr(),
            0.5 => x.sqrt(),
            3.0 => &x * x.sqr()?,
            _ => x.powf(f64::from(e)),
        };
    }
    let (x, y) = broadcast_pair(&x, &y.to_dtype(DType::F32)?)?;
    let shape = x.shape().clone();
    let (a, b) = (floats(&x)?, floats(&y)?);
    let v: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a.powf(*b)).collect();
    Tensor::from_vec(v, shape, x.device())
}

/// Both tensors broadcast to their common shape.
pub fn broadcast_pair(x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = x
        .shape()
        .broadcast_shape_binary_op(y.shape(), "broadcast")?;
    Ok((x.broadcast_as(&shape)?, y.broadcast_as(&shape)?))
}

/// ONNX `Mod`: with `fmod` the sign of the dividend (C's fmod), else of the divisor (Python's %).
fn modulo(x: &Tensor, y: &Tensor, fmod: bool) -> Result<Tensor> {
    let (x, y) = broadcast_pair(x, y)?;
    let shape = x.shape().clone();
    if x.dtype() == DType::F32 {
        let (a, b) = (floats(&x)?, floats(&y)?);
        let v: Vec<f32> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| {
                let r = a % b;
                if !fmod && r != 0.0 && (r < 0.0) != (*b < 0.0) {
                    r + b
                } else {
                    r
                }
            })
            .collect();
        return Tensor::from_vec(v, shape, x.device())?.to_dtype(x.dtype());
    }
    let (a, b) = (super::ints(&x)?, super::ints(&y)?);
    let mut v = Vec::with_capacity(a.len());
    for (a, b) in a.iter().zip(&b) {
        if *b == 0 {
            candle_core::bail!("integer Mod by zero");
        }
        v.push(if fmod {
            // C's fmod: the dividend's sign (Rust's `%`; only MIN % -1 overflows, to 0).
            a.checked_rem(*b).unwrap_or(0)
        } else {
            // Python's %: the divisor's sign.
            let r = a.rem_euclid(*b);
            if *b < 0 && r != 0 { r + b } else { r }
        });
    }
    Tensor::from_vec(v, shape, x.device())?.to_dtype(x.dtype())
}

/// `Clip`: bounds from attributes (opset < 11) or optional inputs 1 and 2.
pub fn clip(inputs: &[Option<Tensor>], min: Option<f32>, max: Option<f32>) -> Result<Tensor> {
    let x = super::req(inputs, 0)?;
    let bound = |i: usize, attr: Option<f32>| -> Result<Option<f32>> {
        match inputs.get(i).and_then(Option::as_ref) {
            Some(t) => Ok(floats(t)?.first().copied()),
            None => Ok(attr),
        }
    };
    let lo = bound(1, min)?.unwrap_or(f32::NEG_INFINITY);
    let hi = bound(2, max)?.unwrap_or(f32::INFINITY);
    if x.dtype() == DType::F32 {
        // ONNX: min > max gives max everywhere.
        return x.maximum(lo)?.minimum(hi);
    }
    let int_bound = |i: usize| -> Result<Option<i64>> {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .map(|t| super::ints(t).map(|v| v[0]))
            .transpose()
    };
    let (lo, hi) = (
        int_bound(1)?.unwrap_or(i64::MIN),
        int_bound(2)?.unwrap_or(i64::MAX),
    );
    let v: Vec<i64> = super::ints(x)?
        .into_iter()
        .map(|v| v.max(lo).min(hi))
        .collect();
    Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())
}

pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let shape = cond
        .shape()
        .broadcast_shape_binary_op(x.shape(), "where")?
        .broadcast_shape_binary_op(y.shape(), "where")?;
    super::array::bounded(shape.dims())?;
    cond.ne(0u8)?
        .broadcast_as(&shape)?
        .where_cond(&x.broadcast_as(&shape)?, &y.broadcast_as(&shape)?)
}

pub fn cast(x: &Tensor, to: DType, to_bool: bool) -> Result<Tensor> {
    if to_bool {
        return x.ne(0f64);
    }
    x.to_dtype(to)
}
