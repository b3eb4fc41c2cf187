//! Element-wise operators.

use candle_core::{DType, Result, Tensor};

use super::{Binary, Unary, floats};

pub fn unary(u: Unary, x: &Tensor) -> Result<Tensor> {
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

/// `x^y`. A scalar exponent (the common case: `(2σ)²` in YOLOv5's head, `x^2` in a hand-written
/// LayerNorm) takes the exact fast paths; otherwise element by element.
fn pow(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
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
    let shape = x.shape().broadcast_shape_binary_op(y.shape(), "broadcast")?;
    Ok((x.broadcast_as(&shape)?, y.broadcast_as(&shape)?))
}

/// ONNX `Mod`: with `fmod` the sign of the dividend (C's fmod), else of the divisor (Python's %).
fn modulo(x: &Tensor, y: &Tensor, fmod: bool) -> Result<Tensor> {
    let (x, y) = broadcast_pair(x, y)?;
    let shape = x.shape().clone();
    if x.dtype() == DType::F32 || fmod {
        let (a, b) = (floats(&x)?, floats(&y)?);
        let v: Vec<f32> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| {
                let r = a % b;
                if !fmod && r != 0.0 && (r < 0.0) != (*b < 0.0) { r + b } else { r }
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
        v.push(a.rem_euclid(*b) + if *b < 0 && a.rem_euclid(*b) != 0 { *b } else { 0 });
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
        return x.clamp(lo, hi);
    }
    let v: Vec<i64> = super::ints(x)?
        .into_iter()
        .map(|v| (v as f32).clamp(lo, hi) as i64)
        .collect();
    Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())
}

pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let shape = cond
        .shape()
        .broadcast_shape_binary_op(x.shape(), "where")?
        .broadcast_shape_binary_op(y.shape(), "where")?;
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
