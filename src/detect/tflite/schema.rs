//! The parts of the TensorFlow Lite schema (`schema.fbs`, file identifier `TFL3`) vigil runs,
//! read into plain types. Field slots are the schema's vtable offsets.

use super::TfliteError;
use super::flatbuf::Table;

/// Builtin operator codes (`BuiltinOperator` in the schema).
mod code {
    pub const ADD: i32 = 0;
    pub const CONCATENATION: i32 = 2;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const LOGISTIC: i32 = 14;
    pub const RESHAPE: i32 = 22;
    pub const CUSTOM: i32 = 32;
    pub const QUANTIZE: i32 = 114;
}

/// What vigil's TFLite executor runs, for error messages.
pub const SUPPORTED: &str = "ADD, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, LOGISTIC, \
     RESHAPE, QUANTIZE (uint8/int8 tensors) and the custom TFLite_Detection_PostProcess";

/// Element types (`TensorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I32,
    U8,
    I8,
    I64,
    /// Another schema type code: loads, but no kernel accepts it.
    Other(i8),
}

impl DType {
    fn from_code(c: i8) -> Self {
        match c {
            0 => Self::F32,
            2 => Self::I32,
            3 => Self::U8,
            4 => Self::I64,
            9 => Self::I8,
            other => Self::Other(other),
        }
    }
}

/// Affine quantization: `real = scale · (q − zero_point)`, per tensor or per channel along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quant {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub axis: usize,
}

#[derive(Debug, Clone)]
pub struct TensorDef {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Index into the model's buffers (0: none, the tensor is computed).
    pub buffer: usize,
    pub quant: Option<Quant>,
}

impl TensorDef {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A fused activation (`ActivationFunctionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    ReluN1To1,
    Relu6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    pub padding: Padding,
    /// `(height, width)`.
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub activation: Activation,
    /// Depthwise only: output channels per input channel.
    pub depth_multiplier: usize,
}

/// `TFLite_Detection_PostProcess`'s custom options (a FlexBuffer map).
#[derive(Debug, Clone, PartialEq)]
pub struct PostProcessOptions {
    pub max_detections: usize,
    pub max_classes_per_detection: usize,
    pub detections_per_class: usize,
    pub use_regular_nms: bool,
    pub nms_score_threshold: f32,
    pub nms_iou_threshold: f32,
    pub num_classes: usize,
    /// Box-coder scales `[y, x, h, w]`.
    pub scale: [f32; 4],
}

#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    Add(Activation),
    Concatenation { axis: i32, activation: Activation },
    Conv2d(ConvOptions),
    DepthwiseConv2d(ConvOptions),
    Dequantize,
    Logistic,
    Reshape,
    Quantize,
    DetectionPostProcess(PostProcessOptions),
}

#[derive(Debug, Clone)]
pub struct OpDef {
    pub kind: OpKind,
    /// Tensor indices; `None` for an optional input left out (−1 in the file).
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
}

/// A model's first subgraph with its constant data.
#[derive(Debug)]
pub struct ModelDef<'a> {
    pub tensors: Vec<TensorDef>,
    pub ops: Vec<OpDef>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub buffers: Vec<&'a [u8]>,
}

impl<'a> ModelDef<'a> {
    /// Parse a `.tflite` file's bytes.
    pub fn parse(file: &'a [u8]) -> Result<Self, TfliteError> {
        if file.get(4..8) != Some(b"TFL3") {
            return Err(TfliteError::Format(
                "not a TensorFlow Lite model (no `TFL3` file identifier at byte 4)".into(),
            ));
        }
        let model = Table::root(file)?;
        let version: u32 = model.scalar(4, 0)?;
        if version != 3 {
            return Err(TfliteError::Format(format!(
                "schema version {version}; vigil reads version 3"
            )));
        }
        let codes = model
            .tables(6)?
            .iter()
            .map(operator_code)
            .collect::<Result<Vec<_>, _>>()?;
        let subgraphs = model.tables(8)?;
        let graph = subgraphs
            .first()
            .ok_or_else(|| TfliteError::Format("the model has no subgraph".into()))?;
        let buffers = model
            .tables(12)?
            .iter()
            .map(|b| buffer(b, file))
            .collect::<Result<Vec<_>, _>>()?;
        let tensors = graph
            .tables(4)?
            .iter()
            .map(tensor)
            .collect::<Result<Vec<_>, _>>()?;
        let n = tensors.len();
        let inputs = indices(graph.scalars::<i32>(6)?, n, "a graph input")?;
        let outputs = indices(graph.scalars::<i32>(8)?, n, "a graph output")?;
        let ops = graph
            .tables(10)?
            .iter()
            .enumerate()
            .map(|(i, t)| op_def(t, &codes, n).map_err(|e| e.at_op(i)))
            .collect::<Result<Vec<_>, _>>()?;
        for t in &tensors {
            if t.buffer >= buffers.len().max(1) {
                return Err(TfliteError::Format(format!(
                    "tensor `{}` names buffer {}, of {}",
                    t.name,
                    t.buffer,
                    buffers.len()
                )));
            }
        }
        Ok(Self {
            tensors,
            ops,
            inputs,
            outputs,
            buffers,
        })
    }

    /// The constant data of tensor `t` (empty when it is computed).
    pub fn data(&self, t: usize) -> &'a [u8] {
        self.buffers
            .get(self.tensors[t].buffer)
            .copied()
            .unwrap_or(&[])
    }
}

/// Tensor indices, each checked against the `n` tensors.
fn indices(raw: Vec<i32>, n: usize, what: &str) -> Result<Vec<usize>, TfliteError> {
    raw.into_iter()
        .map(|i| {
            usize::try_from(i)
                .ok()
                .filter(|i| *i < n)
                .ok_or_else(|| TfliteError::Format(format!("{what} names tensor {i}, of {n}")))
        })
        .collect()
}

fn op_def(t: &Table, codes: &[OpCode], n: usize) -> Result<OpDef, TfliteError> {
    let inputs = t
        .scalars::<i32>(6)?
        .into_iter()
        .map(|i| {
            // −1: an optional input left out
            if i < 0 {
                Ok(None)
            } else {
                indices(vec![i], n, "an operator input").map(|v| Some(v[0]))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(OpDef {
        kind: operator(t, codes)?,
        inputs,
        outputs: indices(t.scalars::<i32>(8)?, n, "an operator output")?,
    })
}

/// An operator code: the builtin code (the larger of the deprecated int8 field and the int32
/// one, as TFLite reads it) or the custom name.
#[derive(Debug, Clone)]
struct OpCode {
    builtin: i32,
    custom: Option<String>,
}

fn operator_code(t: &Table) -> Result<OpCode, TfliteError> {
    let deprecated: i8 = t.scalar(4, 0)?;
    let builtin: i32 = t.scalar(10, 0)?;
    Ok(OpCode {
        builtin: builtin.max(deprecated as i32),
        custom: t.string(6)?.map(String::from),
    })
}

/// A buffer's bytes: inline, or at `offset`/`size` in the file (models over 2 GB).
fn buffer<'a>(t: &Table<'a>, file: &'a [u8]) -> Result<&'a [u8], TfliteError> {
    if let Some(v) = t.vector(4, 1)? {
        return Ok(v.bytes());
    }
    let (offset, size): (u64, u64) = (t.scalar(6, 0)?, t.scalar(8, 0)?);
    if offset <= 1 {
        return Ok(&[]);
    }
    usize::try_from(offset)
        .ok()
        .zip(usize::try_from(size).ok())
        .and_then(|(o, s)| file.get(o..o.checked_add(s)?))
        .ok_or_else(|| {
            TfliteError::Format(format!("a buffer at {offset}+{size} lies outside the file"))
        })
}

fn tensor(t: &Table) -> Result<TensorDef, TfliteError> {
    let name = t.string(10)?.unwrap_or("").to_string();
    let shape = t
        .scalars::<i32>(4)?
        .into_iter()
        .map(|d| {
            usize::try_from(d)
                .map_err(|_| TfliteError::Format(format!("tensor `{name}` has dimension {d}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let elements = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    if elements.is_none_or(|n| n > 1 << 31) {
        return Err(TfliteError::Format(format!(
            "tensor `{name}` of shape {shape:?} is too large"
        )));
    }
    let quant = match t.table(12)? {
        Some(q) => {
            let scale = q.scalars::<f32>(8)?;
            let zero_point = q.scalars::<i64>(10)?;
            let axis: i32 = q.scalar(16, 0)?;
            (!scale.is_empty()).then_some(Quant {
                scale,
                zero_point,
                axis: axis.max(0) as usize,
            })
        }
        None => None,
    };
    Ok(TensorDef {
        shape,
        dtype: DType::from_code(t.scalar(6, 0)?),
        buffer: t.scalar::<u32>(8, 0)? as usize,
        quant,
        name,
    })
}

fn activation(code: i8) -> Result<Activation, TfliteError> {
    match code {
        0 => Ok(Activation::None),
        1 => Ok(Activation::Relu),
        2 => Ok(Activation::ReluN1To1),
        3 => Ok(Activation::Relu6),
        other => Err(TfliteError::Unsupported(format!(
            "fused activation {other} (TANH/SIGN_BIT)"
        ))),
    }
}

fn operator(t: &Table, codes: &[OpCode]) -> Result<OpKind, TfliteError> {
    let index: u32 = t.scalar(4, 0)?;
    let code = codes
        .get(index as usize)
        .ok_or_else(|| TfliteError::Format(format!("operator code {index} of {}", codes.len())))?;
    let options = t.table(12)?;
    let opt = |slot: u16, default: i32| -> Result<i32, TfliteError> {
        Ok(match &options {
            Some(o) => o.scalar(slot, default)?,
            None => default,
        })
    };
    let opt8 = |slot: u16| -> Result<i8, TfliteError> {
        Ok(match &options {
            Some(o) => o.scalar(slot, 0i8)?,
            None => 0,
        })
    };
    Ok(match code.builtin {
        code::ADD => OpKind::Add(activation(opt8(4)?)?),
        code::CONCATENATION => OpKind::Concatenation {
            axis: opt(4, 0)?,
            activation: activation(opt8(6)?)?,
        },
        code::CONV_2D => OpKind::Conv2d(conv_options(
            opt8(4)?,
            [opt(6, 1)?, opt(8, 1)?, opt(12, 1)?, opt(14, 1)?],
            opt8(10)?,
            1,
        )?),
        code::DEPTHWISE_CONV_2D => OpKind::DepthwiseConv2d(conv_options(
            opt8(4)?,
            [opt(6, 1)?, opt(8, 1)?, opt(14, 1)?, opt(16, 1)?],
            opt8(12)?,
            opt(10, 1)?,
        )?),
        code::DEQUANTIZE => OpKind::Dequantize,
        code::LOGISTIC => OpKind::Logistic,
        code::RESHAPE => OpKind::Reshape,
        code::QUANTIZE => OpKind::Quantize,
        code::CUSTOM if code.custom.as_deref() == Some("TFLite_Detection_PostProcess") => {
            OpKind::DetectionPostProcess(post_process_options(t.scalars::<u8>(14)?.as_slice())?)
        }
        code::CUSTOM => {
            return Err(TfliteError::Unsupported(format!(
                "custom operator `{}` (vigil runs {SUPPORTED})",
                code.custom.as_deref().unwrap_or("")
            )));
        }
        other => {
            return Err(TfliteError::Unsupported(format!(
                "builtin operator {other} (vigil runs {SUPPORTED})"
            )));
        }
    })
}

/// `[stride_w, stride_h, dilation_w, dilation_h]` as the schema orders them.
fn conv_options(
    padding: i8,
    sd: [i32; 4],
    act: i8,
    multiplier: i32,
) -> Result<ConvOptions, TfliteError> {
    let positive = |v: i32, what: &str| {
        usize::try_from(v)
            .ok()
            .filter(|v| (1..=64).contains(v))
            .ok_or_else(|| TfliteError::Format(format!("{what} {v}")))
    };
    Ok(ConvOptions {
        padding: if padding == 0 {
            Padding::Same
        } else {
            Padding::Valid
        },
        stride: (positive(sd[1], "stride")?, positive(sd[0], "stride")?),
        dilation: (positive(sd[3], "dilation")?, positive(sd[2], "dilation")?),
        activation: activation(act)?,
        depth_multiplier: positive(multiplier, "depth multiplier")?,
    })
}

fn post_process_options(bytes: &[u8]) -> Result<PostProcessOptions, TfliteError> {
    let bad = |e: flexbuffers::ReaderError| {
        TfliteError::Format(format!("TFLite_Detection_PostProcess options: {e}"))
    };
    let map = flexbuffers::Reader::get_root(bytes)
        .map_err(bad)?
        .get_map()
        .map_err(bad)?;
    let int = |k: &str, default: Option<i64>| -> Result<usize, TfliteError> {
        let v = match (map.index(k), default) {
            (Ok(r), _) => r.as_i64(),
            (Err(_), Some(d)) => d,
            (Err(e), None) => return Err(bad(e)),
        };
        usize::try_from(v)
            .ok()
            .filter(|v| *v <= 100_000)
            .ok_or_else(|| TfliteError::Format(format!("TFLite_Detection_PostProcess: {k} = {v}")))
    };
    let float = |k: &str| map.index(k).map(|r| r.as_f32()).map_err(bad);
    let o = PostProcessOptions {
        max_detections: int("max_detections", None)?,
        max_classes_per_detection: int("max_classes_per_detection", None)?,
        detections_per_class: int("detections_per_class", Some(100))?,
        use_regular_nms: map
            .index("use_regular_nms")
            .map(|r| r.as_bool())
            .unwrap_or(false),
        nms_score_threshold: float("nms_score_threshold")?,
        nms_iou_threshold: float("nms_iou_threshold")?,
        num_classes: int("num_classes", None)?,
        scale: [
            float("y_scale")?,
            float("x_scale")?,
            float("h_scale")?,
            float("w_scale")?,
        ],
    };
    if o.num_classes == 0 || o.max_detections == 0 || o.max_classes_per_detection == 0 {
        return Err(TfliteError::Format(format!(
            "TFLite_Detection_PostProcess: options {o:?}"
        )));
    }
    Ok(o)
}
