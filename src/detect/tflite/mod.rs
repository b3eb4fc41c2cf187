//! TensorFlow Lite models: the flatbuffer read by [`flatbuf`] into [`schema`]'s types, planned
//! once into steps, run with TFLite's integer arithmetic (see [`quant`]) so the results are the
//! interpreter's, not just close to them. The `tflite` model family is [`detector`].

pub mod conv;
pub mod detector;
pub mod elementwise;
pub mod flatbuf;
pub mod gemm;
pub mod postprocess;
pub mod quant;
pub mod schema;

use std::path::Path;

use conv::ConvStep;
use elementwise::{AddStep, ConcatStep, LogisticStep};
use quant::QType;
use schema::{DType, ModelDef, OpKind, PostProcessOptions, TensorDef};

#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bounds(#[from] flatbuf::OutOfBounds),
    #[error("malformed model: {0}")]
    Format(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("operator {index}: {cause}")]
    AtOperator {
        index: usize,
        cause: Box<TfliteError>,
    },
}

impl TfliteError {
    fn at_op(self, index: usize) -> Self {
        Self::AtOperator {
            index,
            cause: Box::new(self),
        }
    }
}

/// A tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

/// A per-tensor `(scale, zero_point)`.
fn per_tensor(t: &TensorDef) -> Result<(f32, i32), TfliteError> {
    match &t.quant {
        Some(q) if q.scale.len() == 1 => Ok((
            q.scale[0],
            q.zero_point.first().copied().unwrap_or(0) as i32,
        )),
        Some(_) => Err(TfliteError::Unsupported(format!(
            "per-channel quantization of activations `{}`",
            t.name
        ))),
        None => Err(TfliteError::Unsupported(format!(
            "`{}` is not quantized (vigil's TFLite path runs uint8/int8 models)",
            t.name
        ))),
    }
}

/// An int32 constant of `n` elements (biases).
fn i32_data(model: &ModelDef, t: usize, n: usize) -> Result<Vec<i32>, TfliteError> {
    let raw = model.data(t);
    if model.tensors[t].dtype != DType::I32 || raw.len() != 4 * n {
        return Err(TfliteError::Format(format!(
            "bias `{}`: expected {n} int32 values",
            model.tensors[t].name
        )));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// A constant tensor's values, if its type is one the kernels read.
fn constant(def: &TensorDef, raw: &[u8]) -> Option<Data> {
    if raw.is_empty() || !raw.len().is_multiple_of(def.elements().max(1)) {
        return None;
    }
    Some(match def.dtype {
        DType::U8 => Data::U8(raw.to_vec()),
        DType::I8 => Data::I8(raw.iter().map(|b| *b as i8).collect()),
        DType::I32 => Data::I32(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        DType::F32 => Data::F32(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        _ => return None,
    })
}

#[derive(Debug)]
enum Step {
    Conv(Box<ConvStep>),
    Add(AddStep),
    Concat(ConcatStep),
    Logistic(LogisticStep),
    Reshape,
    Dequantize { scale: f32, zero: i32 },
    Quantize { scale: f32, zero: i32 },
    PostProcess(PostProcessOptions),
}

#[derive(Debug)]
struct Planned {
    step: Step,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

/// A loaded model, ready to run.
#[derive(Debug)]
pub struct TfliteModel {
    tensors: Vec<TensorDef>,
    constants: Vec<Option<Data>>,
    steps: Vec<Planned>,
    input: usize,
    outputs: Vec<usize>,
}

/// Run `$body` with `$x` bound to the 8-bit slice inside a [`Data`], wrapping the result back.
macro_rules! on_q {
    ($data:expr, $x:ident => $body:expr) => {
        match $data {
            Data::U8($x) => Data::U8($body),
            Data::I8($x) => Data::I8($body),
            other => {
                return Err(TfliteError::Unsupported(format!(
                    "a {} tensor where uint8/int8 was expected",
                    kind_of(other)
                )))
            }
        }
    };
}

fn kind_of(d: &Data) -> &'static str {
    match d {
        Data::U8(_) => "uint8",
        Data::I8(_) => "int8",
        Data::I32(_) => "int32",
        Data::F32(_) => "float32",
    }
}

impl TfliteModel {
    pub fn load(path: &Path) -> Result<Self, TfliteError> {
        let bytes = std::fs::read(path).map_err(|source| TfliteError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TfliteError> {
        let def = ModelDef::parse(bytes)?;
        let [input] = def.inputs[..] else {
            return Err(TfliteError::Unsupported(format!(
                "{} graph inputs (vigil feeds one image)",
                def.inputs.len()
            )));
        };
        let constants: Vec<Option<Data>> = (0..def.tensors.len())
            .map(|t| constant(&def.tensors[t], def.data(t)))
            .collect();
        let mut ready: Vec<bool> = constants.iter().map(Option::is_some).collect();
        ready[input] = true;
        let mut steps = Vec::with_capacity(def.ops.len());
        for (i, op) in def.ops.iter().enumerate() {
            let planned = plan(&def, op, &ready).map_err(|e| e.at_op(i))?;
            for &o in &planned.outputs {
                ready[o] = true;
            }
            steps.push(planned);
        }
        if let Some(&o) = def.outputs.iter().find(|o| !ready[**o]) {
            return Err(TfliteError::Format(format!(
                "graph output `{}` is never computed",
                def.tensors[o].name
            )));
        }
        Ok(Self {
            tensors: def.tensors,
            constants,
            steps,
            input,
            outputs: def.outputs,
        })
    }

    /// The input tensor's definition (shape `[1, H, W, C]`, type, quantization).
    pub fn input(&self) -> &TensorDef {
        &self.tensors[self.input]
    }

    pub fn output_defs(&self) -> impl Iterator<Item = &TensorDef> {
        self.outputs.iter().map(|o| &self.tensors[*o])
    }

    /// Each step's operator, for profiles.
    pub fn step_names(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .map(|s| match &s.step {
                Step::Conv(c) if c.is_depthwise() => "DEPTHWISE_CONV_2D",
                Step::Conv(_) => "CONV_2D",
                Step::Add(_) => "ADD",
                Step::Concat(_) => "CONCATENATION",
                Step::Logistic(_) => "LOGISTIC",
                Step::Reshape => "RESHAPE",
                Step::Dequantize { .. } => "DEQUANTIZE",
                Step::Quantize { .. } => "QUANTIZE",
                Step::PostProcess(_) => "TFLite_Detection_PostProcess",
            })
            .collect()
    }

    /// Run on one input; the graph outputs in order.
    pub fn run(&self, input: Data) -> Result<Vec<Data>, TfliteError> {
        self.run_observed(input, |_, _| {})
    }

    /// Run, showing `observe` each operator's index and output values as they are computed
    /// (for comparing layer by layer against a reference).
    pub fn run_observed(
        &self,
        input: Data,
        mut observe: impl FnMut(usize, &[Data]),
    ) -> Result<Vec<Data>, TfliteError> {
        let mut values: Vec<Option<Data>> = vec![None; self.tensors.len()];
        values[self.input] = Some(input);
        for (i, s) in self.steps.iter().enumerate() {
            let args: Vec<&Data> = s
                .inputs
                .iter()
                .map(|t| values[*t].as_ref().or(self.constants[*t].as_ref()))
                .collect::<Option<_>>()
                .ok_or_else(|| TfliteError::Format("an input is missing".into()).at_op(i))?;
            let results = self.step(s, &args).map_err(|e| e.at_op(i))?;
            observe(i, &results);
            for (t, v) in s.outputs.iter().zip(results) {
                values[*t] = Some(v);
            }
        }
        self.outputs
            .iter()
            .map(|o| values[*o].take().or_else(|| self.constants[*o].clone()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| TfliteError::Format("a graph output was not computed".into()))
    }

    fn step(&self, s: &Planned, args: &[&Data]) -> Result<Vec<Data>, TfliteError> {
        Ok(vec![match &s.step {
            Step::Conv(c) => on_q!(args[0], x => c.run(x)),
            Step::Add(a) => match (args[0], args[1]) {
                (Data::U8(x), Data::U8(y)) => Data::U8(a.run(x, y)),
                (Data::I8(x), Data::I8(y)) => Data::I8(a.run(x, y)),
                _ => return Err(TfliteError::Unsupported("ADD of mixed types".into())),
            },
            Step::Concat(c) => concat(c, args)?,
            Step::Logistic(l) => on_q!(args[0], x => l.run(x)),
            Step::Reshape => args[0].clone(),
            Step::Dequantize { scale, zero } => Data::F32(match args[0] {
                Data::U8(x) => elementwise::dequantize(x, *scale, *zero),
                Data::I8(x) => elementwise::dequantize(x, *scale, *zero),
                other => {
                    return Err(TfliteError::Unsupported(format!(
                        "DEQUANTIZE of {}",
                        kind_of(other)
                    )));
                }
            }),
            Step::Quantize { scale, zero } => match (args[0], self.tensors[s.outputs[0]].dtype) {
                (Data::F32(x), DType::U8) => Data::U8(elementwise::quantize(x, *scale, *zero)),
                (Data::F32(x), DType::I8) => Data::I8(elementwise::quantize(x, *scale, *zero)),
                _ => {
                    return Err(TfliteError::Unsupported(
                        "QUANTIZE other than float32 to uint8/int8".into(),
                    ));
                }
            },
            Step::PostProcess(o) => return self.post_process(s, args, o),
        }])
    }

    fn post_process(
        &self,
        s: &Planned,
        args: &[&Data],
        o: &PostProcessOptions,
    ) -> Result<Vec<Data>, TfliteError> {
        let real = |i: usize| -> Result<Vec<f32>, TfliteError> {
            let def = &self.tensors[s.inputs[i]];
            Ok(match args[i] {
                Data::F32(x) => x.clone(),
                Data::U8(x) => dequantize_f32(x, def)?,
                Data::I8(x) => dequantize_f32(x, def)?,
                other => {
                    return Err(TfliteError::Unsupported(format!(
                        "TFLite_Detection_PostProcess input of {}",
                        kind_of(other)
                    )));
                }
            })
        };
        let (encodings, scores, anchors) = (real(0)?, real(1)?, real(2)?);
        let anchor_count = anchors.len() / 4;
        let coords = encodings.len() / anchor_count.max(1);
        if anchor_count == 0 || coords < 4 || encodings.len() != coords * anchor_count {
            return Err(TfliteError::Format(format!(
                "TFLite_Detection_PostProcess: {} box values for {anchor_count} anchors",
                encodings.len()
            )));
        }
        let boxes = postprocess::decode_boxes(&encodings, coords, &anchors, o);
        let found = postprocess::detect(&boxes, &scores, o)?;
        let n = o.max_detections;
        let (mut b, mut c, mut sc) = (vec![0f32; 4 * n], vec![0f32; n], vec![0f32; n]);
        for (i, d) in found.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&[
                d.corners.ymin,
                d.corners.xmin,
                d.corners.ymax,
                d.corners.xmax,
            ]);
            c[i] = d.class as f32;
            sc[i] = d.score;
        }
        Ok(vec![
            Data::F32(b),
            Data::F32(c),
            Data::F32(sc),
            Data::F32(vec![found.len() as f32]),
        ])
    }
}

/// The post-process op's own dequantization: `(q − zero_point) · scale` in f32.
fn dequantize_f32<T: QType>(x: &[T], def: &TensorDef) -> Result<Vec<f32>, TfliteError> {
    let (scale, zero) = per_tensor(def)?;
    Ok(x.iter()
        .map(|v| (v.to_i32() as f32 - zero as f32) * scale)
        .collect())
}

fn concat(c: &ConcatStep, args: &[&Data]) -> Result<Data, TfliteError> {
    if let Some(xs) = args
        .iter()
        .map(|a| {
            if let Data::U8(x) = a {
                Some(x.as_slice())
            } else {
                None
            }
        })
        .collect::<Option<Vec<_>>>()
    {
        return Ok(Data::U8(c.run(&xs)));
    }
    if let Some(xs) = args
        .iter()
        .map(|a| {
            if let Data::I8(x) = a {
                Some(x.as_slice())
            } else {
                None
            }
        })
        .collect::<Option<Vec<_>>>()
    {
        return Ok(Data::I8(c.run(&xs)));
    }
    Err(TfliteError::Unsupported(
        "CONCATENATION of other than uint8/int8 tensors of one type".into(),
    ))
}

/// Check an operator's tensors and prepare its step.
fn plan(def: &ModelDef, op: &schema::OpDef, ready: &[bool]) -> Result<Planned, TfliteError> {
    let inputs: Vec<usize> = op.inputs.iter().flatten().copied().collect();
    if let Some(&t) = inputs.iter().find(|t| !ready[**t]) {
        return Err(TfliteError::Format(format!(
            "reads `{}` before any operator writes it",
            def.tensors[t].name
        )));
    }
    let t = |i: usize| -> Result<&TensorDef, TfliteError> {
        op.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|t| &def.tensors[t])
            .ok_or_else(|| TfliteError::Format(format!("input {i} is missing")))
    };
    let y = op
        .outputs
        .first()
        .map(|o| &def.tensors[*o])
        .ok_or_else(|| TfliteError::Format("no output".into()))?;
    let step = match &op.kind {
        OpKind::Conv2d(o) => Step::Conv(Box::new(ConvStep::prepare(def, op, o, false)?)),
        OpKind::DepthwiseConv2d(o) => Step::Conv(Box::new(ConvStep::prepare(def, op, o, true)?)),
        OpKind::Add(act) => Step::Add(AddStep::prepare(t(0)?, t(1)?, y, *act)?),
        OpKind::Concatenation { axis, activation } => {
            if *activation != schema::Activation::None {
                return Err(TfliteError::Unsupported(
                    "CONCATENATION with a fused activation".into(),
                ));
            }
            let ins: Vec<&TensorDef> = inputs.iter().map(|t| &def.tensors[*t]).collect();
            Step::Concat(ConcatStep::prepare(&ins, y, *axis)?)
        }
        OpKind::Logistic => Step::Logistic(match t(0)?.dtype {
            DType::U8 => LogisticStep::prepare::<u8>(t(0)?, y)?,
            _ => LogisticStep::prepare::<i8>(t(0)?, y)?,
        }),
        OpKind::Reshape => {
            if t(0)?.elements() != y.elements() {
                return Err(TfliteError::Format(format!(
                    "RESHAPE of {:?} to {:?}",
                    t(0)?.shape,
                    y.shape
                )));
            }
            Step::Reshape
        }
        OpKind::Dequantize => {
            let (scale, zero) = per_tensor(t(0)?)?;
            Step::Dequantize { scale, zero }
        }
        OpKind::Quantize => {
            let (scale, zero) = per_tensor(y)?;
            Step::Quantize { scale, zero }
        }
        OpKind::DetectionPostProcess(o) => {
            if inputs.len() != 3 || op.outputs.len() != 4 {
                return Err(TfliteError::Format(
                    "TFLite_Detection_PostProcess takes 3 inputs and gives 4 outputs".into(),
                ));
            }
            Step::PostProcess(o.clone())
        }
    };
    Ok(Planned {
        step,
        inputs,
        outputs: op.outputs.clone(),
    })
}
