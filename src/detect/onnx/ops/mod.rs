//! The ONNX operators vigil runs. Each node is parsed once at load into an [`Op`] (attributes
//! read and checked there, so a bad attribute is a load error naming the node), then evaluated on
//! Candle tensors. Activations are f32, shape arithmetic i64, booleans u8.

mod array;
mod control;
mod conv;
mod math;
mod roi;
mod special;

use candle_core::{DType, Device, Result, Tensor};

use super::proto::{Attrs, NodeProto};
pub use control::with_implicit_inputs;
pub use conv::ConvOp;

/// Operators whose kernels run on the host whatever the device: on a GPU their data tensors
/// cross the bus every frame (selection and region ops; MaxPool and Resize have device paths).
/// Named at load (`OnnxDetector`), so the round trips are never silent.
pub const HOST_OPS: &[&str] = &[
    "GatherND",
    "GridSample",
    "NonMaxSuppression",
    "NonZero",
    "RoiAlign",
    "ScatterElements",
    "ScatterND",
    "TopK",
];

/// Operators per the default ONNX domain that vigil implements, for messages and `inspect`.
pub const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "If",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "Loop",
    "MatMul",
    "Max",
    "MaxPool",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "Range",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceL2",
    "ReduceProd",
    "ReduceSum",
    "RoiAlign",
    "ScatterElements",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// Element-wise functions of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Identity,
    Sigmoid,
    Relu,
    LeakyRelu(f32),
    HardSigmoid(f32, f32),
    HardSwish,
    Exp,
    Log,
    Sqrt,
    Sin,
    Cos,
    Tanh,
    Erf,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    Softplus,
    Not,
}

/// Element-wise functions of two tensors (numpy broadcasting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    Mod { fmod: bool },
}

/// Reductions over axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    /// √(Σ x²)
    L2,
}

/// A parsed node.
#[derive(Debug, Clone)]
pub enum Op {
    /// Control flow: a branch chosen per frame.
    If(Box<control::IfOp>),
    /// Control flow: a body run as many times as the data says.
    Loop(Box<control::LoopOp>),
    Unary(Unary),
    Binary(Binary),
    /// Max/Min over more than two inputs.
    Variadic(Binary),
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Where,
    Cast {
        to: DType,
        to_bool: bool,
    },
    Constant(Tensor),
    ConstantOfShape(Tensor),
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    Reshape {
        allowzero: bool,
    },
    Flatten {
        axis: i64,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
        outputs: usize,
    },
    /// opset ≥ 10: starts/ends/axes/steps are inputs.
    Slice,
    /// opset < 10: attributes.
    SliceAttrs {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Option<Vec<i64>>,
    },
    Gather {
        axis: i64,
    },
    GatherNd,
    ScatterNd,
    NonZero,
    GatherElements {
        axis: i64,
    },
    Expand,
    Tile,
    Range,
    Pad {
        mode: special::PadMode,
        pads: Option<Vec<i64>>,
        value: f32,
    },
    Conv(Box<ConvOp>),
    ConvTranspose(Box<conv::ConvTransposeOp>),
    MaxPool(special::Pool),
    GlobalPool(Reduce),
    BatchNorm {
        epsilon: f32,
    },
    /// Region features of the two-stage detectors.
    RoiAlign(Box<roi::RoiAlignOp>),
    ScatterElements {
        axis: i64,
    },
    /// Per sample and channel over the spatial dims (GroupNorm as torch exports it).
    InstanceNorm {
        epsilon: f32,
    },
    Resize(special::ResizeOp),
    Softmax {
        axis: i64,
        legacy: bool,
    },
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    Reduce {
        kind: Reduce,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        axes_input: bool,
        noop_empty: bool,
    },
    ArgMax {
        axis: i64,
        keepdims: bool,
    },
    TopK {
        axis: i64,
        largest: bool,
        k: Option<usize>,
    },
    GridSample(special::GridSampleOp),
    NonMaxSuppression {
        center_point_box: bool,
    },
}

/// Why a node cannot be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// No implementation for this operator (or domain).
    Unsupported,
    /// Implemented, but not with these attributes.
    Bad(String),
}

impl From<&str> for ParseError {
    fn from(s: &str) -> Self {
        Self::Bad(s.to_string())
    }
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        Self::Bad(s)
    }
}

impl Op {
    /// Parse `node` as of `opset` (the model's default-domain opset).
    pub fn parse(
        node: &NodeProto,
        opset: i64,
        device: &Device,
    ) -> std::result::Result<Op, ParseError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(ParseError::Unsupported);
        }
        if node.op_type == "If" {
            return Ok(Op::If(Box::new(control::IfOp::parse(node, opset, device)?)));
        }
        if node.op_type == "Loop" {
            return Ok(Op::Loop(Box::new(control::LoopOp::parse(
                node, opset, device,
            )?)));
        }
        let a = Attrs::new(node);
        if let Some(u) = unary(node.op_type.as_str(), &a)? {
            return Ok(Op::Unary(u));
        }
        if let Some(b) = binary(node.op_type.as_str(), &a)? {
            let variadic = matches!(b, Binary::Max | Binary::Min | Binary::Add)
                && node.op_type != "Add"
                && node.input.len() != 2;
            return Ok(if variadic {
                Op::Variadic(b)
            } else {
                Op::Binary(b)
            });
        }
        array::parse(node, opset, &a, device).or_else(|e| match e {
            ParseError::Unsupported => special::parse(node, opset, &a),
            other => Err(other),
        })
    }

    /// Evaluate on `inputs` (`None` for an omitted optional input).
    pub fn eval(&self, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
        let one = |t: Tensor| Ok(vec![t]);
        match self {
            Op::Unary(u) => one(math::unary(*u, req(inputs, 0)?)?),
            Op::Binary(b) => one(math::binary(*b, req(inputs, 0)?, req(inputs, 1)?)?),
            Op::Variadic(b) => {
                let mut acc = req(inputs, 0)?.clone();
                for t in inputs.iter().skip(1).flatten() {
                    acc = math::binary(*b, &acc, t)?;
                }
                one(acc)
            }
            Op::Clip { min, max } => one(math::clip(inputs, *min, *max)?),
            Op::Where => one(math::where_(
                req(inputs, 0)?,
                req(inputs, 1)?,
                req(inputs, 2)?,
            )?),
            Op::Cast { to, to_bool } => one(math::cast(req(inputs, 0)?, *to, *to_bool)?),
            Op::Conv(c) => one(c.eval(inputs)?),
            Op::ConvTranspose(c) => one(c.eval(inputs)?),
            Op::If(i) => i.eval(inputs),
            Op::Loop(l) => l.eval(inputs),
            _ => match array::eval(self, inputs) {
                Some(r) => r,
                None => special::eval(self, inputs),
            },
        }
    }

    /// Whether the output's shape depends on the input values themselves (not their shapes).
    pub fn data_dependent_shape(&self) -> bool {
        matches!(
            self,
            Op::NonZero | Op::NonMaxSuppression { .. } | Op::If(_) | Op::Loop(_)
        )
    }

    /// Whether input `k`'s values (when not a constant) decide the output's shape.
    pub fn shape_from_input(&self, k: usize) -> bool {
        match self {
            Op::ConstantOfShape(_) | Op::Range => true,
            Op::Reshape { .. }
            | Op::Expand
            | Op::Tile
            | Op::Slice
            | Op::Pad { .. }
            | Op::TopK { .. } => k >= 1,
            Op::Split { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Reduce { .. } => {
                k >= 1
            }
            Op::Resize(_) => k >= 2,
            _ => false,
        }
    }

    /// Whether evaluating has no cost worth keeping out of the constant folder (all ops can be
    /// folded; this only names the ones whose outputs are shapes rather than data).
    pub fn is_shape_of(&self) -> bool {
        matches!(self, Op::Shape { .. } | Op::Size)
    }
}

/// Input `i`, which the operator requires.
pub fn req(inputs: &[Option<Tensor>], i: usize) -> Result<&Tensor> {
    inputs
        .get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| candle_core::Error::Msg(format!("input {i} is required")))
}

/// A small tensor's values as i64 (shapes, axes, indices).
pub fn ints(t: &Tensor) -> Result<Vec<i64>> {
    t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()
}

/// A small tensor's values as f32 (scales, thresholds).
pub fn floats(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// A possibly negative axis of a rank-`rank` tensor.
pub fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        candle_core::bail!("axis {a} is out of range for rank {rank}");
    }
    Ok(v as usize)
}

fn unary(op: &str, a: &Attrs) -> std::result::Result<Option<Unary>, String> {
    Ok(Some(match op {
        "Identity" | "Dropout" => Unary::Identity,
        "Sigmoid" => Unary::Sigmoid,
        "Relu" => Unary::Relu,
        "LeakyRelu" => Unary::LeakyRelu(a.float_or("alpha", 0.01)?),
        "HardSigmoid" => Unary::HardSigmoid(a.float_or("alpha", 0.2)?, a.float_or("beta", 0.5)?),
        "HardSwish" => Unary::HardSwish,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Sqrt" => Unary::Sqrt,
        "Sin" => Unary::Sin,
        "Cos" => Unary::Cos,
        "Tanh" => Unary::Tanh,
        "Erf" => Unary::Erf,
        "Neg" => Unary::Neg,
        "Abs" => Unary::Abs,
        "Reciprocal" => Unary::Reciprocal,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        "Softplus" => Unary::Softplus,
        "Not" => Unary::Not,
        _ => return Ok(None),
    }))
}

fn binary(op: &str, a: &Attrs) -> std::result::Result<Option<Binary>, String> {
    Ok(Some(match op {
        "Add" | "Sum" => Binary::Add,
        "Sub" => Binary::Sub,
        "Mul" => Binary::Mul,
        "Div" => Binary::Div,
        "Pow" => Binary::Pow,
        "Max" => Binary::Max,
        "Min" => Binary::Min,
        "Equal" => Binary::Equal,
        "Less" => Binary::Less,
        "LessOrEqual" => Binary::LessOrEqual,
        "Greater" => Binary::Greater,
        "GreaterOrEqual" => Binary::GreaterOrEqual,
        "And" => Binary::And,
        "Or" => Binary::Or,
        "Xor" => Binary::Xor,
        "Mod" => Binary::Mod {
            fmod: a.int_or("fmod", 0)? != 0,
        },
        _ => return Ok(None),
    }))
}

/// The largest absolute difference of two same-shape tensors (operator tests).
#[cfg(test)]
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], dims: &[usize]) -> Option<Tensor> {
        Some(Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap())
    }

    fn i(v: &[i64]) -> Option<Tensor> {
        Some(Tensor::new(v, &Device::Cpu).unwrap())
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// A frame with no candidates in an end-to-end NMS graph: empty parts keep the concatenated shape.
    #[test]
    fn concat_of_empty_parts_has_the_concatenated_shape() {
        let e = t(&[], &[0, 2]);
        let out = Op::Concat { axis: -1 }.eval(&[e.clone(), e]).unwrap();
        assert_eq!(out[0].dims(), &[0, 4]);
    }

    #[test]
    fn sum_takes_every_input() {
        let x = t(&[1.0, 2.0], &[2]);
        let out = Op::Variadic(Binary::Add)
            .eval(&[x.clone(), x.clone(), x])
            .unwrap();
        assert_eq!(f32s(&out[0]), vec![3.0, 6.0]);
    }

    #[test]
    fn slice_with_a_negative_step_clamps_its_start_into_the_axis() {
        let x = t(&[1.0, 2.0, 3.0], &[3]);
        let out = Op::Slice
            .eval(&[x, i(&[-4]), i(&[i64::MIN]), i(&[0]), i(&[-1])])
            .unwrap();
        assert_eq!(f32s(&out[0]), vec![1.0]);
        let x = t(&[1.0, 2.0, 3.0], &[3]);
        let out = Op::Slice
            .eval(&[x, i(&[5]), i(&[i64::MIN]), i(&[0]), i(&[-2])])
            .unwrap();
        assert_eq!(f32s(&out[0]), vec![3.0, 1.0]);
    }

    /// What a hostile graph asks for is refused, never allocated or panicked on.
    #[test]
    fn hostile_sizes_and_values_are_errors() {
        let wide = t(&vec![0.0; 1 << 16], &[1 << 16, 1]);
        let tall = t(&vec![0.0; 1 << 16], &[1, 1 << 16]);
        assert!(
            Op::Binary(Binary::Add).eval(&[wide, tall]).is_err(),
            "2^32 elements"
        );
        let f = |v: f32| t(&[v], &[]);
        assert!(
            Op::Range.eval(&[f(0.0), f(1.0), f(0.0)]).is_err(),
            "zero delta"
        );
        assert!(
            Op::Range.eval(&[f(0.0), f(1e12), f(1.0)]).is_err(),
            "1e12 elements"
        );
        assert!(
            Op::Binary(Binary::Div).eval(&[i(&[1]), i(&[0])]).is_err(),
            "integer division by zero"
        );
        let x = t(&[0.0; 4], &[1, 1, 2, 2]);
        assert!(
            Op::Tile
                .eval(&[x.clone(), i(&[1 << 20, 1 << 20, 1, 1])])
                .is_err()
        );
        assert!(Op::Expand.eval(&[x, i(&[1 << 20, 1 << 20, 2, 2])]).is_err());
        assert!(
            Op::GatherNd
                .eval(&[
                    t(&[1.0], &[1]),
                    Some(Tensor::new(0i64, &Device::Cpu).unwrap())
                ])
                .is_err()
        );
    }

    #[test]
    fn integer_clip_allows_min_above_max() {
        let out = Op::Clip {
            min: None,
            max: None,
        }
        .eval(&[i(&[1, 7, 20]), i(&[5]), i(&[3])])
        .unwrap();
        assert_eq!(out[0].to_vec1::<i64>().unwrap(), vec![3, 3, 3]);
    }

    /// Pads beyond the kernel make windows entirely in the padding: no panic.
    #[test]
    fn max_pool_with_pads_past_the_input_does_not_panic() {
        let p = special::Pool {
            kernel: (1, 1),
            strides: (1, 1),
            pads: [0, 0, 0, 2],
            ceil: false,
        };
        let out = Op::MaxPool(p)
            .eval(&[t(&[1.0, 2.0], &[1, 1, 1, 2])])
            .unwrap();
        assert_eq!(out[0].dims(), &[1, 1, 1, 4]);
    }

    #[test]
    fn integer_pow_and_fmod_stay_integer_and_exact() {
        let big = 16_777_217i64; // 2^24 + 1: not representable in f32
        let out = Op::Binary(Binary::Mod { fmod: true })
            .eval(&[i(&[big, -7]), i(&[2, 3])])
            .unwrap();
        assert_eq!(out[0].to_vec1::<i64>().unwrap(), vec![1, -1]);
        let out = Op::Binary(Binary::Mod { fmod: false })
            .eval(&[i(&[-7]), i(&[3])])
            .unwrap();
        assert_eq!(out[0].to_vec1::<i64>().unwrap(), vec![2]);
        let out = Op::Binary(Binary::Pow).eval(&[i(&[3]), i(&[2])]).unwrap();
        assert_eq!(out[0].to_vec1::<i64>().unwrap(), vec![9]);
    }

    #[test]
    fn matmul_promotes_vectors() {
        let a = t(&[1.0, 2.0], &[2]);
        let b = t(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[2, 3]);
        let out = Op::MatMul.eval(&[a, b]).unwrap();
        assert_eq!(out[0].dims(), &[3]);
        assert_eq!(f32s(&out[0]), vec![3.0, 2.0, 2.0]);
    }
}
