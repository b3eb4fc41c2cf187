//! The 8-bit element types and the quantized range of a fused activation. (The kernels'
//! requantization follows XNNPACK, which the LiteRT interpreter runs by default: f32 scales
//! rounded half to even for convolutions, integer multipliers and a shift for ADD. TFLite's
//! own reference kernels use gemmlowp's double rounding and differ from it by one step on
//! about 0.5% of a layer's outputs; measured, see `tests/it/tflite.rs`.)

/// A uint8 or int8 element: how it widens to i32 and narrows back (saturating).
pub trait QType: Copy + Default + Send + Sync + 'static {
    const MIN: i32;
    const MAX: i32;
    fn to_i32(self) -> i32;
    /// `v` already clamped to `[MIN, MAX]`.
    fn from_i32(v: i32) -> Self;
}

impl QType for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn from_i32(v: i32) -> Self {
        v as u8
    }
}

impl QType for i8 {
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn from_i32(v: i32) -> Self {
        v as i8
    }
}

/// The quantized range a fused activation leaves (TFLite's
/// `CalculateActivationRangeQuantized`).
pub fn activation_range<T: QType>(
    act: super::schema::Activation,
    scale: f32,
    zero_point: i32,
) -> (i32, i32) {
    use super::schema::Activation::*;
    let q = |f: f32| zero_point + (f / scale).round() as i32;
    match act {
        None => (T::MIN, T::MAX),
        Relu => (T::MIN.max(q(0.0)), T::MAX),
        Relu6 => (T::MIN.max(q(0.0)), T::MAX.min(q(6.0))),
        ReluN1To1 => (T::MIN.max(q(-1.0)), T::MAX.min(q(1.0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tflite::schema::Activation;

    #[test]
    fn relu6_range_of_the_ssd_layers() {
        // scale 0.0235285, zero point 0: 6.0 is 255
        assert_eq!(
            activation_range::<u8>(Activation::Relu6, 0.023_528_477, 0),
            (0, 255)
        );
        assert_eq!(
            activation_range::<u8>(Activation::Relu6, 0.05, 10),
            (10, 130)
        );
        assert_eq!(
            activation_range::<i8>(Activation::None, 0.05, 10),
            (-128, 127)
        );
        assert_eq!(
            activation_range::<i8>(Activation::Relu, 0.05, -3),
            (-3, 127)
        );
    }
}
