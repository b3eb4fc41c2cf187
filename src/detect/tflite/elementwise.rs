//! The quantized element-wise operators, each as the interpreter computes it: ADD as XNNPACK
//! does, CONCATENATION rescaling inputs whose quantization differs as TFLite's own kernel does
//! (in f32, rounding half away from zero; XNNPACK does not take those), LOGISTIC through a
//! 256-entry table, QUANTIZE and DEQUANTIZE.

use super::TfliteError;
use super::quant::{QType, activation_range};
use super::schema::{Activation, DType, TensorDef};

/// ADD of two tensors of one shape, as XNNPACK's `qu8_vadd`/`qs8_vadd` do it: each input
/// times an integer multiplier (its scale over the output's, in fixed point with the larger
/// one in `[2^20, 2^21)`), summed with a bias that folds in both zero points and the rounding,
/// then one arithmetic right shift.
#[derive(Debug)]
pub struct AddStep {
    multipliers: (i64, i64),
    bias: i64,
    shift: u32,
    output_zero: i32,
    range: (i32, i32),
}

/// Bits of the larger multiplier (XNNPACK's "multiplier bits").
const ADD_MULTIPLIER_BITS: i32 = 20;

impl AddStep {
    pub fn prepare(
        a: &TensorDef,
        b: &TensorDef,
        y: &TensorDef,
        act: Activation,
    ) -> Result<Self, TfliteError> {
        if a.shape != b.shape || a.shape != y.shape {
            return Err(TfliteError::Unsupported(format!(
                "ADD of shapes {:?} and {:?} (broadcasting)",
                a.shape, b.shape
            )));
        }
        let ((sa, za), (sb, zb), (sy, zy)) = (
            super::per_tensor(a)?,
            super::per_tensor(b)?,
            super::per_tensor(y)?,
        );
        let (ra, rb) = (sa / sy, sb / sy);
        let largest = ra.abs().max(rb.abs());
        // XNNPACK's range for the scale ratio: [2^-10, 2^8)
        if !(2f32.powi(-10)..2f32.powi(8)).contains(&largest) {
            return Err(TfliteError::Unsupported(format!(
                "ADD with input/output scale ratio {largest}"
            )));
        }
        let exponent = ((largest.to_bits() >> 23) & 0xff) as i32 - 127;
        let shift = (ADD_MULTIPLIER_BITS - exponent) as u32;
        let fixed = |r: f32| (r * 2f32.powi(shift as i32)).round_ties_even() as i64;
        let (ma, mb) = (fixed(ra), fixed(rb));
        Ok(Self {
            multipliers: (ma, mb),
            bias: (1i64 << (shift - 1)) - ma * za as i64 - mb * zb as i64,
            shift,
            output_zero: zy,
            range: match y.dtype {
                DType::U8 => activation_range::<u8>(act, sy, zy),
                _ => activation_range::<i8>(act, sy, zy),
            },
        })
    }

    pub fn run<T: QType>(&self, a: &[T], b: &[T]) -> Vec<T> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| {
                let acc = self.bias
                    + x.to_i32() as i64 * self.multipliers.0
                    + y.to_i32() as i64 * self.multipliers.1;
                let sum = (acc >> self.shift) as i32 + self.output_zero;
                T::from_i32(sum.clamp(self.range.0, self.range.1))
            })
            .collect()
    }
}

/// CONCATENATION along one axis; each input copied, or rescaled when its quantization differs
/// from the output's (`ConcatenationWithScaling`).
#[derive(Debug)]
pub struct ConcatStep {
    /// Elements of each input per outer index, and its `(scale, bias)` if it needs rescaling.
    parts: Vec<(usize, Option<(f32, f32)>)>,
    outer: usize,
    output_zero: i32,
}

impl ConcatStep {
    pub fn prepare(inputs: &[&TensorDef], y: &TensorDef, axis: i32) -> Result<Self, TfliteError> {
        let rank = y.shape.len() as i32;
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return Err(TfliteError::Format(format!(
                "CONCATENATION axis {axis} of rank {rank}"
            )));
        }
        let axis = axis as usize;
        let (sy, zy) = super::per_tensor(y)?;
        let inverse = 1.0 / sy;
        let mut parts = Vec::new();
        let mut along = 0;
        for t in inputs {
            let same_elsewhere = t.shape.len() == y.shape.len()
                && t.shape
                    .iter()
                    .zip(&y.shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same_elsewhere {
                return Err(TfliteError::Format(format!(
                    "CONCATENATION of {:?} into {:?}",
                    t.shape, y.shape
                )));
            }
            along += t.shape[axis];
            let (s, z) = super::per_tensor(t)?;
            let rescale = (s != sy || z != zy).then(|| {
                let scale = s * inverse;
                (scale, -(z as f32) * scale)
            });
            parts.push((t.shape[axis..].iter().product(), rescale));
        }
        if along != y.shape[axis] {
            return Err(TfliteError::Format(format!(
                "CONCATENATION sizes add to {along}, not {}",
                y.shape[axis]
            )));
        }
        Ok(Self {
            parts,
            outer: y.shape[..axis].iter().product(),
            output_zero: zy,
        })
    }

    pub fn run<T: QType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let mut out = Vec::with_capacity(inputs.iter().map(|x| x.len()).sum());
        for o in 0..self.outer {
            for (x, (n, rescale)) in inputs.iter().zip(&self.parts) {
                let chunk = &x[o * n..(o + 1) * n];
                match rescale {
                    None => out.extend_from_slice(chunk),
                    Some((scale, bias)) => out.extend(chunk.iter().map(|v| {
                        let q =
                            (v.to_i32() as f32 * scale + bias).round() as i32 + self.output_zero;
                        T::from_i32(q.clamp(T::MIN, T::MAX))
                    })),
                }
            }
        }
        out
    }
}

/// LOGISTIC on 8-bit values: a table of every input's result (`PopulateLookupTable`).
#[derive(Debug)]
pub struct LogisticStep {
    table: Box<[i32; 256]>,
}

impl LogisticStep {
    pub fn prepare<T: QType>(x: &TensorDef, y: &TensorDef) -> Result<Self, TfliteError> {
        let ((sx, zx), (sy, zy)) = (super::per_tensor(x)?, super::per_tensor(y)?);
        let inverse = 1.0 / sy;
        let mut table = Box::new([0i32; 256]);
        for v in T::MIN..=T::MAX {
            let real = sx * (v - zx) as f32;
            let sigmoid = 1.0 / (1.0 + (-real).exp());
            let q = ((sigmoid * inverse).round() + zy as f32) as i32;
            table[(v - T::MIN) as usize] = q.clamp(T::MIN, T::MAX);
        }
        Ok(Self { table })
    }

    pub fn run<T: QType>(&self, x: &[T]) -> Vec<T> {
        x.iter()
            .map(|v| T::from_i32(self.table[(v.to_i32() - T::MIN) as usize]))
            .collect()
    }
}

/// `real = scale · (q − zero_point)`, computed in f64 as `Dequantize` does.
pub fn dequantize<T: QType>(x: &[T], scale: f32, zero: i32) -> Vec<f32> {
    x.iter()
        .map(|v| (scale as f64 * (v.to_i32() - zero) as f64) as f32)
        .collect()
}

/// `q = round(real / scale) + zero_point`, saturated (`AffineQuantize`).
pub fn quantize<T: QType>(x: &[f32], scale: f32, zero: i32) -> Vec<T> {
    x.iter()
        .map(|v| T::from_i32(((v / scale).round() as i32 + zero).clamp(T::MIN, T::MAX)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tflite::schema::Quant;

    fn t(shape: &[usize], scale: f32, zero: i64) -> TensorDef {
        TensorDef {
            name: "t".into(),
            shape: shape.to_vec(),
            dtype: DType::U8,
            buffer: 0,
            quant: Some(Quant {
                scale: vec![scale],
                zero_point: vec![zero],
                axis: 0,
            }),
        }
    }

    #[test]
    fn add_of_equal_scales_is_the_real_sum() {
        let (a, y) = (t(&[4], 0.1, 10), t(&[4], 0.2, 0));
        let step = AddStep::prepare(&a, &a, &y, Activation::None).unwrap();
        // (q − 10)·0.1 twice, over 0.2: q − 10
        assert_eq!(
            step.run::<u8>(&[10, 20, 30, 255], &[10, 20, 30, 255]),
            vec![0, 10, 20, 245]
        );
    }

    #[test]
    fn concat_rescales_only_the_inputs_that_differ() {
        let (a, b, y) = (t(&[1, 2], 1.0, 0), t(&[1, 1], 0.5, 4), t(&[1, 3], 1.0, 0));
        let step = ConcatStep::prepare(&[&a, &b], &y, -1).unwrap();
        assert_eq!(step.run::<u8>(&[&[7, 9], &[10]]), vec![7, 9, 3]);
    }

    #[test]
    fn logistic_table_is_monotonic_and_centred() {
        let (x, y) = (t(&[1], 0.1, 128), t(&[1], 1.0 / 256.0, 0));
        let step = LogisticStep::prepare::<u8>(&x, &y).unwrap();
        let out = step.run::<u8>(&(0..=255).collect::<Vec<u8>>());
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(out[128], 128);
    }
}
